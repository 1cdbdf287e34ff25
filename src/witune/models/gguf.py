"""Turn a GGUF file into a plain Hugging Face folder, once, cached.

transformers can read GGUF files, but it dequantizes them on every load (slow: about a minute for SmolLM2-135M)
and leaves a GGUF ``quantization_config`` on the model, which trips up training code (PEFT, Trainer and
``save_pretrained`` all treat the model as quantized). So we load the GGUF once, rebuild a clean model from
its config and dequantized weights, and save that as an ordinary folder every other tool can use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path

from witune.errors import ConfigError

MARKER = "witune_source.json"  # written last inside a finished conversion; names where it came from


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The witune cache: ``cache_dir`` if given, else ``$WITUNE_CACHE``, else ``~/.cache/witune``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("WITUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "witune"


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Load ``gguf_file`` with transformers and write model, tokenizer and generation config to ``out_dir``.

    Weights are saved as float32: the GGUF is dequantized to float32 by transformers, so this is exact.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    out = Path(out_dir)
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype="float32")
    except Exception as err:  # noqa: BLE001
        # Only the file is read here, and a truncated or forged GGUF fails in the parser in many ways
        # (struct.error, EOFError, IndexError, KeyError, ...): each means "this file cannot be read".
        raise ConfigError(f"cannot read GGUF file {gguf_file}: {type(err).__name__}: {_first_line(err)}") from err

    config_dict = loaded.config.to_dict()
    # Drop everything that says "this model is quantized / came from a GGUF file".
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config_dict.pop(key, None)
    config_dict["dtype"] = "float32"
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    # Every weight must come across; only weights tied to another one (lm_head) may be absent.
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise ConfigError(
            f"GGUF file {gguf_file}: rebuilt model does not match its weights "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.generation_config = loaded.generation_config
    if tokenizer.model_max_length > 10**9:  # transformers' "unknown" sentinel; the model knows its limit
        tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    for key in ("is_local", "local_files_only"):  # loading details that leak into the saved config
        tokenizer.init_kwargs.pop(key, None)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def cached_gguf_folder(
    gguf_file: str | Path, cache_dir: str | Path | None = None, folder_name: str | None = None
) -> Path:
    """Return a plain HF folder converted from ``gguf_file``, converting it on the first call only.

    The folder lives under :func:`cache_root` as ``folder_name`` (default: the file's stem plus a short hash of
    its path, size and modification time, so a changed file gets a fresh conversion). The conversion is
    written to a temporary folder and renamed into place, so an interrupted or concurrent conversion never
    leaves a half-written folder that later calls would trust.
    """
    gguf_file = Path(gguf_file).expanduser().resolve()
    if not gguf_file.is_file():
        raise ConfigError(f"GGUF file not found: {gguf_file}")
    stat = gguf_file.stat()
    if folder_name is None:
        key = f"{gguf_file}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        folder_name = f"{gguf_file.stem}-{hashlib.sha256(key).hexdigest()[:12]}"
    final = cache_root(cache_dir) / folder_name
    if (final / MARKER).is_file():
        return final

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{folder_name}-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    try:
        from rich.console import Console

        with Console(stderr=True).status(
            f"Converting {gguf_file.name} to a Hugging Face folder (once; about a minute)..."
        ):
            convert_gguf(gguf_file, tmp)
        info = {"source": str(gguf_file), "size": stat.st_size, "seconds": round(time.perf_counter() - start, 1)}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final)  # a leftover without marker from some older, broken attempt
        os.rename(tmp, final)
    except OSError:
        # Another process finished the same conversion first: use theirs.
        if not (final / MARKER).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _tied_keys(model) -> set[str]:
    """Names of parameters that are tied to another one (absent from a state dict that ties them)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    keys = tied.keys() if isinstance(tied, dict) else tied
    return set(keys) if model.config.tie_word_embeddings else set()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
