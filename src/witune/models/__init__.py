"""Model loading: hub names, local folders, GGUF files, the offline SmolLM2-135M, and the tiny test model."""

from witune.models.gguf import cache_root, cached_gguf_folder, convert_gguf
from witune.models.load import hub_offline, load_model, load_tokenizer, pad_token_id, resolve_model_path
from witune.models.smollm import smollm2_gguf_file, smollm2_path
from witune.models.tiny import CHATML_TEMPLATE, make_tiny_model

__all__ = [
    "CHATML_TEMPLATE",
    "cache_root",
    "cached_gguf_folder",
    "convert_gguf",
    "hub_offline",
    "load_model",
    "load_tokenizer",
    "make_tiny_model",
    "pad_token_id",
    "resolve_model_path",
    "smollm2_gguf_file",
    "smollm2_path",
]
