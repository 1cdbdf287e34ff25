"""Controlled prompt perturbations of a multiple-choice benchmark (WIT's robustness claim).

An item is shown as an instruction, optional few-shot solved items, the question and its lettered options,
then `Answer:`; the model is scored on the option *label* (" A", " B", ...). The clean prompt is
`CLEAN_INSTRUCTION` + `A. option` lines + the few-shot items in their original order. Each perturbation
changes one thing and has several variants:

- `paraphrase`: the instruction reworded (`PARAPHRASES`), everything else clean;
- `option_format`: the option labels / layout changed (`(A) x`, `1. x`, `a) x`), the answer label with them;
- `typos`: character noise (swap, drop, double, substitute) on the question and option texts, each letter
  hit with probability `rate`; one variant per seed;
- `fewshot_order`: the few-shot items shuffled (never left in their order); one variant per seed (needs at
  least 2 shots).

Everything is a pure function of (item, item index, seed): the same seed gives the same prompts.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

CLEAN_INSTRUCTION = "The following is a multiple choice question. Answer with the letter of the correct option."
PARAPHRASES = (
    "Choose the correct answer to the question below and reply with its label.",
    "Read the question and pick the best option. Give only the option's label.",
    "Here is a question with several possible answers. Which one is right? Respond with the label.",
)
# name -> (labels, line format); the first is the clean one.
OPTION_STYLES: dict[str, tuple[str, str]] = {
    "letter_dot": ("ABCDEFGH", "{label}. {text}"),
    "letter_paren": ("ABCDEFGH", "({label}) {text}"),
    "number_dot": ("12345678", "{label}. {text}"),
    "lower_paren": ("abcdefgh", "{label}) {text}"),
}
CLEAN_STYLE = "letter_dot"
PERTURBATIONS = ("paraphrase", "option_format", "typos", "fewshot_order")


@dataclass(frozen=True)
class MCItem:
    question: str
    choices: tuple[str, ...]
    gold: int


@dataclass(frozen=True)
class Variant:
    """One way of showing every item: which instruction, option style, noise seed and few-shot order seed."""

    perturbation: str  # "clean" or one of PERTURBATIONS
    name: str  # e.g. "paraphrase/1", "typos/seed=3"
    instruction: str = CLEAN_INSTRUCTION
    style: str = CLEAN_STYLE
    typo_rate: float = 0.0
    typo_seed: int = 0
    shuffle_seed: int | None = None


def load_items(bench: str, data_dir: str | Path) -> list[MCItem]:
    """ARC-Challenge (MosaicML copy) or PIQA (validation + labels) from the shared evaluation files."""
    data = Path(data_dir)
    if bench == "arc_challenge":
        items = []
        for line in (
            (data / "arc_challenge" / "arc_challenge_test_llmfoundry.jsonl").read_text(encoding="utf-8").splitlines()
        ):
            if line.strip():
                r = json.loads(line)
                q = r["query"].removeprefix("Question: ").strip()
                items.append(MCItem(q, tuple(r["choices"]), int(r["gold"])))
        return items
    if bench == "piqa":
        goals = (data / "piqa" / "valid.jsonl").read_text(encoding="utf-8").splitlines()
        labels = (data / "piqa" / "valid-labels.lst").read_text(encoding="utf-8").split()
        if len(goals) != len(labels):
            raise ValueError(f"piqa: {len(goals)} questions but {len(labels)} labels")
        out = []
        for g, lab in zip(goals, labels):
            r = json.loads(g)
            out.append(MCItem(r["goal"].strip(), (r["sol1"].strip(), r["sol2"].strip()), int(lab)))
        return out
    raise ValueError(f"witune:robustness: unknown benchmark {bench!r}; choose arc_challenge or piqa")


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Each letter, with probability `rate`, is swapped with the next character, dropped, doubled or replaced
    by a random lower-case letter (the common keyboard slips). Rate 0 returns the text unchanged."""
    if rate <= 0:
        return text
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        c = chars[i]
        if c.isalpha() and rng.random() < rate:
            op = rng.randrange(4)
            if op == 0 and i + 1 < len(chars):
                out += [chars[i + 1], c]
                i += 2
                continue
            if op == 1:
                pass  # dropped
            elif op == 2:
                out += [c, c]
            else:
                out.append(rng.choice(string.ascii_lowercase.replace(c.lower(), "")))
        else:
            out.append(c)
        i += 1
    return "".join(out)


def variants(perturbations: tuple[str, ...], rate: float, n_seeds: int, seed: int, shots: int) -> list[Variant]:
    """The clean variant first, then every variant of each requested perturbation."""
    out = [Variant("clean", "clean")]
    for p in perturbations:
        if p == "paraphrase":
            out += [Variant(p, f"{p}/{i + 1}", instruction=text) for i, text in enumerate(PARAPHRASES)]
        elif p == "option_format":
            out += [Variant(p, f"{p}/{s}", style=s) for s in OPTION_STYLES if s != CLEAN_STYLE]
        elif p == "typos":
            out += [Variant(p, f"{p}/seed={seed + k}", typo_rate=rate, typo_seed=seed + k) for k in range(n_seeds)]
        elif p == "fewshot_order":
            if shots >= 2:
                out += [Variant(p, f"{p}/seed={seed + k}", shuffle_seed=seed + k) for k in range(n_seeds)]
        else:
            raise ValueError(f"unknown perturbation {p!r}; choose from {PERTURBATIONS}")
    return out


def _block(item: MCItem, v: Variant, rng: random.Random | None) -> tuple[str, list[str]]:
    labels, fmt = OPTION_STYLES[v.style]
    if len(item.choices) > len(labels):
        raise ValueError(f"an item has {len(item.choices)} options; at most {len(labels)} are supported")
    noisy = (lambda t: add_typos(t, v.typo_rate, rng)) if rng is not None else (lambda t: t)
    lines = [f"Question: {noisy(item.question)}"]
    lines += [fmt.format(label=labels[i], text=noisy(c)) for i, c in enumerate(item.choices)]
    return "\n".join(lines) + "\nAnswer:", [f" {labels[i]}" for i in range(len(item.choices))]


def build_prompt(item: MCItem, index: int, v: Variant, shots: list[MCItem]) -> tuple[str, list[str]]:
    """(prompt, answer continuations) of item number `index` under variant `v`."""
    examples = list(shots)
    if v.shuffle_seed is not None:
        random.Random(v.shuffle_seed * 1_000_003 + index).shuffle(examples)
        if examples == list(shots):  # a shuffle that kept the order perturbs nothing: rotate instead
            examples = examples[1:] + examples[:1]
    rng = random.Random(v.typo_seed * 1_000_003 + index) if v.typo_rate > 0 else None
    parts = [v.instruction, ""]
    for ex in examples:  # solved examples are shown in the same style, without noise
        text, conts = _block(ex, Variant(v.perturbation, v.name, style=v.style), None)
        parts += [text + conts[ex.gold], ""]
    question, conts = _block(item, v, rng)
    parts.append(question)
    return "\n".join(parts), conts
