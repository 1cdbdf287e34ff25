"""Tokenizer and model loading for the statistics commands, through ``witune.models``."""

from __future__ import annotations

from pathlib import Path


def get_tokenizer(name: str | Path):
    """``witune.models.load_tokenizer``: hub name, folder, .gguf, or "smollm2"."""
    from witune.models import load_tokenizer

    return load_tokenizer(str(name))


def get_model(name: str | Path, device: str = "auto"):
    """The causal LM in float32 on ``device`` ("auto": CUDA when available), in eval mode."""
    import torch

    from witune.models import load_model

    model = load_model(str(name), dtype=torch.float32)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()
