"""A small generated instruction set with checkable answers, so `witune demo` works on any machine.

Every record is Alpaca-style (`instruction`, `input`, `output`) plus `task` and `answer`; `check` tells whether
a generated text contains the right answer. Deterministic for a seed.

>>> recs = generate(4, seed=0)
>>> [r["task"] for r in recs]
['add', 'reverse', 'sort', 'count']
>>> all(check(r, r["output"]) for r in recs)
True
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

_WORDS = [
    "apple",
    "river",
    "stone",
    "garden",
    "pencil",
    "window",
    "yellow",
    "planet",
    "silver",
    "forest",
    "candle",
    "bridge",
    "rocket",
    "dragon",
    "meadow",
    "orange",
    "violet",
    "castle",
    "thunder",
    "harbor",
]


def _add(rng: random.Random) -> tuple[str, str, str, str]:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return "Add the two numbers.", f"{a} + {b}", f"{a} + {b} = {a + b}", str(a + b)


def _reverse(rng: random.Random) -> tuple[str, str, str, str]:
    w = rng.choice(_WORDS)
    return "Write the word backwards, letter by letter.", w, f"The word '{w}' backwards is '{w[::-1]}'.", w[::-1]


def _sort(rng: random.Random) -> tuple[str, str, str, str]:
    xs = rng.sample(range(1, 100), rng.randint(3, 6))
    ans = ", ".join(map(str, sorted(xs)))
    return "Sort these numbers from smallest to largest.", ", ".join(map(str, xs)), f"Sorted: {ans}", ans


def _count(rng: random.Random) -> tuple[str, str, str, str]:
    w = rng.choice(_WORDS)
    letter = rng.choice(sorted(set(w)))
    n = w.count(letter)
    return (
        f"How many times does the letter '{letter}' appear in the word?",
        w,
        f"The letter '{letter}' appears {n} time{'s' if n != 1 else ''} in '{w}'.",
        str(n),
    )


TASKS: dict[str, Callable[[random.Random], tuple[str, str, str, str]]] = {
    "add": _add,
    "reverse": _reverse,
    "sort": _sort,
    "count": _count,
}


def generate(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n records cycling through the task types, with random contents from `seed`."""
    rng = random.Random(seed)
    names = list(TASKS)
    out = []
    for i in range(n):
        task = names[i % len(names)]
        instruction, inp, output, answer = TASKS[task](rng)
        out.append({"instruction": instruction, "input": inp, "output": output, "task": task, "answer": answer})
    return out


def check(record: dict[str, Any], text: str) -> bool:
    """Whether `text` (a model's answer) contains the record's answer."""
    return str(record["answer"]) in text


def write_jsonl(path: str | Path, n: int, seed: int = 0) -> Path:
    from witune.atomic import atomic_open

    path = Path(path)
    with atomic_open(path, "w") as f:
        for r in generate(n, seed):
            f.write(json.dumps(r) + "\n")
    return path
