"""Show what the loss sees: every token coloured by its weight (nanochat's mask view, with weights)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from witune.data.render import Rendered


def weight_style(w: float, max_w: float) -> str:
    """Grey for weight 0; from blue (small) to green (the largest weight in use) otherwise."""
    if w == 0:
        return "grey50"
    frac = min(w / max_w, 1.0) if max_w > 0 else 1.0
    r, g, b = int(40 * (1 - frac)), int(110 + 140 * frac), int(255 * (1 - frac) + 60 * frac)
    return f"bold #{r:02x}{g:02x}{b:02x}" if frac >= 1 else f"#{r:02x}{g:02x}{b:02x}"


def colored_tokens(row: Rendered, tokenizer: Any, max_weight: float = 1.0) -> Text:
    """The sample's tokens, each styled by the weight of predicting it; token boundaries shown by
    alternating underline so that the tokenisation itself is visible."""
    text = Text()
    for i, (tid, w) in enumerate(zip(row.input_ids, row.weights)):
        piece = tokenizer.decode([tid]).replace("\n", "↵\n")
        style = weight_style(w, max_weight) + (" underline" if i % 2 else "")
        text.append(piece, style=style)
    return text


def legend(prompt: float, response: float) -> Text:
    t = Text("legend: ")
    mx = max(prompt, response)
    for label, w in (("weight 0 ", 0.0), (f"prompt {prompt:g} ", prompt), (f"response {response:g}", response)):
        t.append(label, style=weight_style(w, mx))
    return t


def row_json(row: Rendered) -> dict[str, Any]:
    """Per sample: token ids, the weight of predicting each token, and each token's role."""
    return {
        "source": str(row.location),
        "input_ids": row.input_ids,
        "weights": row.weights,
        "roles": [
            r + ("/response" if resp else "") if r == "assistant" else r for r, resp in zip(row.roles, row.response)
        ],
        "prompt_tokens": row.prompt_tokens,
        "response_tokens": row.response_tokens,
        "trainable_tokens": row.trainable_tokens,
    }
