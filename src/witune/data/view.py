"""Show what the loss sees: every token coloured by its weight (nanochat's mask view, with weights)."""

from __future__ import annotations

from typing import Any

from rich.text import Text

from witune.data.rendered import Rendered
from witune.data.weights import RoleWeights


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


def legend(weights: RoleWeights, max_weight: float, dynamic: str | None = None) -> Text:
    """What the colours mean: the configured static weights. Tokens are coloured by their *final* static weight
    (role x message x span x sample weight, `witune.data.weights`), so message and sample weights from the data
    show as in-between colours. `dynamic`: the name of a dynamic token weight (e.g. DFT) that the loss
    multiplies in during training; it depends on the model's predictions, so no colour can show it."""
    t = Text("legend: ")
    items = [("weight 0", 0.0), (f"prompt {weights.prompt:g}", weights.prompt)]
    items.append((f"response {weights.response:g}", weights.response))
    items += [(f"role {r} {w:g}", w) for r, w in weights.roles.items()]
    items += [(f"span {k} x{w:g}", w) for k, w in weights.spans.items()]
    for label, w in items:
        t.append(label + "  ", style=weight_style(w, max_weight))
    t.append("(colour = final static weight; message and sample weights from the data multiply in)", style="dim")
    if dynamic:
        t.append(f"\nduring training the {dynamic} dynamic weight multiplies every token's weight on top", style="bold")
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
        "spans": [row.span_at(i) for i in range(len(row))],
        "prompt_tokens": row.prompt_tokens,
        "response_tokens": row.response_tokens,
        "trainable_tokens": row.trainable_tokens,
        "cuts": row.cuts,
    }
