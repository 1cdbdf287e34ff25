"""The start model of a DPO run: whatever `witune train` wrote (a run folder, its merged model/, or a LoRA
adapter folder), a plain model folder, a hub name or 'smollm2'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from witune.data.errors import ConfigError


def resolve_model(path: str) -> str:
    """A `witune train` run folder -> its model/ folder; anything else as given."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        if (p / "model").is_dir():
            return str(p / "model")
        raise ConfigError(
            f"config key 'model': {path} holds neither a model (config.json), a LoRA adapter "
            "(adapter_config.json) nor a `witune train` run (model/)"
        )
    return str(p) if p.exists() else path


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_start_model(path: str, dtype: torch.dtype = torch.float32) -> Any:
    """The policy DPO starts from, as a plain (non-peft) model: an adapter is merged into its base, so that
    the start model (and the frozen reference) is exactly the SFT model `witune train` produced."""
    from witune.models import load_model

    resolved = resolve_model(path)
    if not is_adapter(resolved):
        return load_model(resolved, dtype=dtype)
    from peft import PeftModel

    base_name = json.loads((Path(resolved) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(f"{resolved}/adapter_config.json names no base_model_name_or_path")
    base = load_model(base_name, dtype=dtype)
    return PeftModel.from_pretrained(base, resolved).merge_and_unload()


def load_start_tokenizer(path: str, tokenizer: str | None = None) -> Any:
    from witune.models import load_tokenizer

    return load_tokenizer(tokenizer or resolve_model(path))
