"""Tokenizer and model loading for the statistics commands, through ``witune.models`` when it provides them."""

from __future__ import annotations

from pathlib import Path


def _local_path(name: str) -> str:
    if name == "smollm2":
        from witune.models.smollm import smollm2_path

        return str(smollm2_path())
    return name


def get_tokenizer(name: str | Path):
    """``witune.models.load_tokenizer`` (hub name, folder, .gguf, "smollm2"), else a plain AutoTokenizer."""
    try:
        from witune.models import load_tokenizer
    except ImportError:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(_local_path(str(name)))
    return load_tokenizer(str(name))


def get_model(name: str | Path, device: str = "auto"):
    """The causal LM in float32 on ``device`` ("auto": CUDA when available), in eval mode."""
    import torch

    try:
        from witune.models import load_model
    except ImportError:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(_local_path(str(name)), dtype=torch.float32)
    else:
        model = load_model(str(name), dtype=torch.float32)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()
