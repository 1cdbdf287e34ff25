#!/usr/bin/env bash
# The whole test suite from scratch: environment, system packages the tests use, lint and types, then pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Headless Chromium renders the HTML report in its test; installed from Debian when we may (root).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the report rendering test will be skipped"
fi
# R with glmmTMB and mgcv: the reference engine (the PLW paper's own beta GLMM and GAM) of `witune analyze`.
if ! Rscript -e 'suppressMessages({library(glmmTMB); library(mgcv)})' >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-core r-cran-glmmtmb r-cran-mgcv \
    >/dev/null) || echo "warning: could not install R (glmmTMB, mgcv); the R engine tests will be skipped"
fi
# Lint, format and types (pinned in the dev extra, configured in pyproject.toml): fail before the long tests do.
.venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
.venv/bin/mypy
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
