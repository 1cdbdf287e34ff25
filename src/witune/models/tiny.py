"""A random tiny Llama with a real (in-process trained) BPE tokenizer and a ChatML chat template.

Tests across witune need a model that loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``, renders chats
the way SmolLM2 does and runs a forward pass in milliseconds. Nothing is downloaded: the tokenizer is trained on
a small English corpus generated here, the weights are random from a fixed seed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

EOS = "<|endoftext|>"
PAD = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [EOS, PAD, IM_START, IM_END]

# ChatML as in SmolLM2-135M-Instruct, including its habit of inserting a default system turn when the chat
# has none: renderers must cope with templates that add text the messages do not contain.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SUBJECTS = [
    "The cat",
    "A student",
    "My friend",
    "The model",
    "Our team",
    "The teacher",
    "A small dog",
    "The river",
    "Every user",
    "The old man",
    "This function",
    "The weather",
]
_VERBS = ["likes", "writes", "reads", "explains", "answers", "finds", "builds", "follows", "describes", "needs"]
_OBJECTS = [
    "a long letter",
    "the question",
    "simple code",
    "the capital of France",
    "a short story",
    "the main idea",
    "three numbers",
    "a clear answer",
    "the recipe",
    "an instruction",
    "the data",
]
_ENDINGS = [
    "today.",
    "every morning.",
    "with care.",
    "in Paris.",
    "before lunch.",
    "again and again.",
    "for the test.",
    "quickly.",
    "at home.",
    "step by step.",
]
_EXTRA = [
    "What is the capital of France? The capital of France is Paris.",
    "Write a poem about the sea.",
    "Summarize the following text in one sentence.",
    "Translate this sentence into French.",
    "List three colors: red, green, blue.",
    "def add(a, b):\n    return a + b",
    "1 + 2 = 3, 10 * 4 = 40, 7 - 5 = 2.",
    "Answer the question below. Think step by step, then give the final answer.",
    "Hello! How can I help you today?",
    'Sure, here is an example: {"name": "Ada", "age": 36}',
]


def tiny_corpus() -> list[str]:
    """A fixed English corpus of a few hundred sentences (the same on every call, so tokenizers agree)."""
    combos = itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS)
    # Every 37th combination gives ~360 varied sentences without any randomness.
    sentences = [" ".join(c) for i, c in enumerate(combos) if i % 37 == 0]
    return sentences + _EXTRA * 5


def _train_tokenizer(vocab_size: int, chat_template: bool):
    """Byte-level BPE trained on ``tiny_corpus``; returns a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least "
            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens)"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHATML_TEMPLATE if chat_template else None,
        model_max_length=1024,
    )


def make_tiny_model(out_dir: str | Path, vocab_size: int = 512, seed: int = 0, chat_template: bool = True) -> Path:
    """Write a random tiny ``LlamaForCausalLM`` and its tokenizer to ``out_dir`` and return the folder.

    The folder is a plain Hugging Face folder (config, safetensors weights, tokenizer files, generation
    config). The result is deterministic for a given ``seed``. ``chat_template=False`` leaves the tokenizer
    without a chat template, for testing the "no chat template" error paths.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size, chat_template)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # fork_rng: building the model must not disturb the caller's global torch random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
