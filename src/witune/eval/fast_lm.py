"""`WituneLM`: lm-eval's `HFLM` with a faster log-likelihood path, registered in lm-eval as model "witune".

Everything but `_loglikelihood_tokens` is `HFLM`'s own: tokenisation (`_encode_pair`, so the context and
continuation ids are the ones stock `HFLM` builds), `loglikelihood_rolling` (its windows come here),
`generate_until`, chat templates. The ids fed to the model are stock `HFLM`'s too: a request's input is
`(context + continuation)[-(max_length + 1):][:-1]` and its scored positions are the last `len(continuation)`
of them. What changes is the work done on them:

- **Only scored positions reach the LM head.** The model is called with `logits_to_keep` set to a boolean mask
  of the scored positions (transformers applies its own head, soft-capping included, to those rows only), so
  no full-vocabulary logits or log-softmax for context tokens. Log-probs and `is_greedy` are computed from those
  rows as `HFLM` does (`log_softmax` in `softmax_dtype`, argmax of the log-probs against the continuation).
- **A shared prefix runs once.** The distinct inputs of a batch form a prefix tree, one node per token: the
  choices of a multiple-choice item share their context (and their common first tokens), the questions of an
  MMLU subject the few-shot block they all start with, WinoGrande's two contexts the words before the blank.
  Each node runs once. The tree is laid out depth-first in packed rows (`PACK_TOKENS`) with a 4D attention
  mask (a token sees its ancestors and itself, nothing else) and `position_ids` = its depth, so every logit is
  the one its own sequence gives run alone. Identical requests run once. The tree is built on the exact ids
  after truncation, so a truncated request only shares what it really shares.
- **Batches** hold at most `batch_size` distinct inputs (the choices of one context stay together, so a
  batch of one still shares its item's context), in id order (neighbours share the most); without sharing,
  longest first as in `HFLM`.

The packed path is checked once per model on a small probe against plain forwards, and is off (with a warning)
for attention kinds that do not take a plain 4D mask and for sliding-window models; a model whose forward
ignores a mask in `logits_to_keep` gets full logits, sliced. `batch_size="auto"` and seq2seq models take
`HFLM`'s own path unchanged. `share_prefix=False` (model_args `share_prefix=False`) turns sharing off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from witune.data.collate import pack_bfd

log = logging.getLogger(__name__)

# Tokens per packed row of the prefix-tree path (a larger subtree gets a row of its own): attention over a
# packed row is dense, so small subtrees share rows of about this size (its cost is a few % of the layers'
# matmuls); `_pack_rows` then chooses how many rows, and balances them.
PACK_TOKENS = 256

Request = tuple[tuple[str, str] | None, list[int], list[int]]


@dataclass
class _Unit:
    """One distinct model input (stock HFLM's ids) whose last `scored` positions are scored, with the requests
    (index, continuation ids) answered from it: identical requests run once."""

    ids: tuple[int, ...]
    scored: int
    requests: list[tuple[int, list[int]]] = field(default_factory=list)


class _Forest:
    """A prefix tree over units, one node per token: units that agree on their first k ids share k nodes, so
    a shared context (an item's choices; the few-shot prefix every question of a subject starts with; the
    words before WinoGrande's blank) runs once. Each subtree under the root is laid out depth-first, so a
    node's descendants are the `size[node] - 1` positions right after it: a token may attend exactly to the
    nodes whose span [start, start + size) holds it, i.e. to its ancestors and itself."""

    def __init__(self, units: list[_Unit]) -> None:
        self.token: list[int] = []
        self.depth: list[int] = []
        self.children: list[dict[int, int]] = []
        roots: dict[int, int] = {}
        self.nodes: list[list[int]] = []  # per unit: the node of each of its positions
        for u in units:
            path, level = [], roots
            for d, t in enumerate(u.ids):
                node = level.get(t)
                if node is None:
                    node = level[t] = len(self.token)
                    self.token.append(t)
                    self.depth.append(d)
                    self.children.append({})
                path.append(node)
                level = self.children[node]
            self.nodes.append(path)
        self.size = [1] * len(self.token)
        self.subtrees: list[list[int]] = []  # per root: its nodes in depth-first order
        for root in roots.values():
            order, stack = [], [root]
            while stack:
                node = stack.pop()
                order.append(node)
                stack.extend(reversed(self.children[node].values()))
            for node in reversed(order):
                self.size[node] += sum(self.size[c] for c in self.children[node].values())
            self.subtrees.append(order)


@register_model("witune")
class WituneLM(HFLM):
    """`HFLM` whose log-likelihood requests score only the continuation positions and share contexts."""

    def __init__(self, *args: Any, share_prefix: bool | str = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # lm-eval's model_args strings arrive as bools already; a plain string is read the same way
        self.share_prefix = share_prefix.lower() == "true" if isinstance(share_prefix, str) else bool(share_prefix)
        self._mask_keep: bool | None = None  # does the model's forward honour a boolean logits_to_keep?
        self._prefix_ok: bool | None = None  # does the packed shared-prefix path equal plain forwards here?

    # -- model calls ---------------------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(
            device_type=self.device.type,
            dtype=self.mixed_precision_dtype,
            enabled=self.mixed_precision_dtype is not None,
        )

    def _forward(self, ids: torch.Tensor, keep: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        """(logits [keep.sum(), vocab] at the True positions of `keep` [batch, seq] in row-major order, output)."""
        if self._mask_keep is None:
            self._mask_keep = self._probe_mask_keep()
        with torch.no_grad(), self._autocast():
            if self._mask_keep:
                out = self.model(ids, logits_to_keep=keep, **kwargs)
                return out.logits, out
            out = self.model(ids, **kwargs)
            return out.logits[keep], out

    def _probe_mask_keep(self) -> bool:
        ids = torch.tensor([[self.prefix_token_id] * 3], device=self.device)
        keep = torch.tensor([[False, True, True]], device=self.device)
        try:
            with torch.no_grad(), self._autocast():
                out = self.model(ids, logits_to_keep=keep).logits
                full = self.model(ids).logits[keep]
        except (TypeError, IndexError, RuntimeError, ValueError):
            out, full = None, None
        ok = out is not None and full is not None and _close(out, full)
        if not ok:
            log.warning("witune LM: %s ignores a mask in logits_to_keep; full logits are sliced", type(self.model))
        return ok

    def _plain_logits(self, units: list[_Unit]) -> list[torch.Tensor]:
        """Each unit's scored logits from one right-padded forward (stock HFLM's batch, less the head's work)."""
        ids = torch.zeros(len(units), max(len(u.ids) for u in units), dtype=torch.long, device=self.device)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for i, u in enumerate(units):
            ids[i, : len(u.ids)] = torch.tensor(u.ids, dtype=torch.long)
            keep[i, len(u.ids) - u.scored : len(u.ids)] = True
        logits, _ = self._forward(ids, keep)
        return list(logits.split([u.scored for u in units]))

    def _tree_logits(self, units: list[_Unit]) -> list[torch.Tensor]:
        """Each unit's scored logits from the prefix tree of the batch (`_Forest`), its subtrees packed into
        rows (`_pack_rows`) with a 4D mask that lets a token see its ancestors and itself, and
        `position_ids` = its depth: every token's logits are those of its own sequence run alone, a shared node
        is computed once for every unit through it. No cache, no padding inside a row."""
        forest = _Forest(units)
        rows = _pack_rows(forest.subtrees, int(getattr(self.model.config, "hidden_size", 0) or 1024))
        fill = [sum(map(len, row)) for row in rows]
        width = max(fill)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        pos = torch.zeros(len(rows), width, dtype=torch.long)
        end = torch.arange(1, width + 1).repeat(len(rows), 1)  # padding: a span of itself only
        column = [0] * len(forest.token)  # node -> flat index (row * width + column)
        for r, row in enumerate(rows):
            nodes = [n for tree in row for n in tree]
            for c, n in enumerate(nodes):
                column[n] = r * width + c
            ids[r, : len(nodes)] = torch.tensor([forest.token[n] for n in nodes])
            pos[r, : len(nodes)] = torch.tensor([forest.depth[n] for n in nodes])
            end[r, : len(nodes)] = torch.tensor([c + forest.size[n] for c, n in enumerate(nodes)])
        scored = [[column[n] for n in path[len(path) - u.scored :]] for u, path in zip(units, forest.nodes)]
        keep = torch.zeros(len(rows) * width, dtype=torch.bool)
        keep[[c for cols in scored for c in cols]] = True
        keep = keep.view(len(rows), width)
        idx = torch.arange(width)
        # query i sees key j iff j is i or an ancestor of i: j <= i < end of j's subtree
        allowed = (idx[None, None, :] <= idx[None, :, None]) & (idx[None, :, None] < end[:, None, :])
        logits, _ = self._forward(
            ids.to(self.device),
            keep.to(self.device),
            attention_mask=self._mask(allowed[:, None]).to(self.device),
            position_ids=pos.to(self.device),
        )
        flat = torch.cumsum(keep.flatten(), 0).sub_(1)  # flat index -> row of logits
        return [logits[flat[torch.tensor(cols)].to(logits.device)] for cols in scored]

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4D mask in the form the model's attention takes as it is: boolean for SDPA, additive for eager."""
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        dtype = self.mixed_precision_dtype or next(self.model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)

    def _can_pack(self) -> str | None:
        """Why packed rows cannot stand in for separate sequences with this model (None: they can, if the
        probe agrees): attention kinds that do not take a plain 4D mask, sliding windows (a custom mask
        replaces the model's own window)."""
        cfg = self.model.config
        if getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager"):
            return f"attention {getattr(cfg, '_attn_implementation', None)!r}"
        if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
            return "sliding-window attention"
        if any("sliding" in str(t) for t in getattr(cfg, "layer_types", None) or ()):
            return "sliding-window layers"
        return None

    def _probe_prefix(self) -> bool:
        """The prefix-tree path against plain forwards on a few small units: choices of one context, a unit
        inside another, a prefix shared across contexts, a lone unit, scored positions inside a shared part."""
        gen = torch.Generator().manual_seed(0)
        vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
        t = tuple(torch.randint(0, vocab, (12,), generator=gen).tolist())
        units = [
            _Unit(t[:10], 4),
            _Unit(t[:7] + t[9:11], 3),  # shares t[:7] with the first, scored from 6
            _Unit(t[:6], 2),  # inside the first
            _Unit(t[:4] + t[:1], 1),
            _Unit(t[5:11], 2),  # a tree of its own
        ]
        why = self._can_pack()
        if why is not None:
            log.warning("witune LM: shared prefixes off for %s (%s)", type(self.model).__name__, why)
            return False
        try:
            shared, plain = self._tree_logits(units), self._plain_logits(units)
        except (TypeError, IndexError, RuntimeError, ValueError, AttributeError) as e:
            log.warning("witune LM: shared prefixes off for %s (%s)", type(self.model).__name__, e)
            return False
        ok = len(shared) == len(plain) and all(_close(a, b) for a, b in zip(shared, plain))
        if not ok:
            log.warning("witune LM: shared prefixes off for %s (packed path differs)", type(self.model).__name__)
        return ok

    # -- the requests --------------------------------------------------------------------------------------

    def _loglikelihood_tokens(
        self,
        requests: list[Request],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal" or (self.batch_size == "auto" and override_bs is None):
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        batch_size = int(override_bs if override_bs is not None else self.batch_size)
        units: dict[tuple[tuple[int, ...], int], _Unit] = {}
        for i, (_, context, continuation) in enumerate(requests):
            assert len(context) > 0 and len(continuation) > 0 and len(continuation) <= self.max_length
            if len(context) + len(continuation) > self.max_length + 1:
                log.warning(
                    "context (%d) + continuation (%d) tokens exceed max_length %d: truncated from the left",
                    len(context),
                    len(continuation),
                    self.max_length,
                )
            # Stock HFLM's input: the last max_length tokens before the final one (left truncation).
            ids = tuple((context + continuation)[-(self.max_length + 1) :][:-1])
            units.setdefault((ids, len(continuation)), _Unit(ids, len(continuation))).requests.append((i, continuation))
        if self.share_prefix and self._prefix_ok is None and len(units) > 1:
            self._prefix_ok = self._probe_prefix()
        share = self.share_prefix and bool(self._prefix_ok)

        res: list[tuple[float, bool] | None] = [None] * len(requests)
        pbar = tqdm(
            total=len(requests), disable=(disable_tqdm or (self.rank != 0)), desc="Running loglikelihood requests"
        )

        def answer(unit: _Unit, logits: torch.Tensor) -> None:
            logp = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)  # [scored, vocab]
            greedy = logp.argmax(dim=-1)
            for index, continuation in unit.requests:
                target = torch.tensor(continuation, dtype=torch.long, device=logp.device)
                got = (float(logp.gather(1, target[:, None]).sum()), bool((greedy == target).all()))
                res[index] = got
                request_str = requests[index][0]
                if request_str is not None:  # rolling windows have none: loglikelihood_rolling adds them
                    self.cache_hook.add_partial("loglikelihood", request_str, got)
                pbar.update(1)

        if share:
            # The choices of one context stay in one batch (at least they share), batches hold at most
            # batch_size distinct inputs (an item with more choices goes alone), in id order: neighbours share
            # the most.
            by_context: dict[tuple[int, ...], list[_Unit]] = {}
            for u in sorted(units.values(), key=lambda u: u.ids):
                by_context.setdefault(u.ids[: len(u.ids) - u.scored], []).append(u)
            for item_batch in _batches(sorted(by_context.values(), key=lambda us: us[0].ids), batch_size, len):
                batch = [u for us in item_batch for u in us]
                for unit, logits in zip(batch, self._tree_logits(batch)):
                    answer(unit, logits)
        else:
            # Longest first, as HFLM does: a batch's first member sets its padded width; memory errors come early.
            for batch in _batches(sorted(units.values(), key=_length_key), batch_size, lambda u: 1):
                for unit, logits in zip(batch, self._plain_logits(batch)):
                    answer(unit, logits)
        pbar.close()
        assert all(r is not None for r in res)
        return res  # type: ignore[return-value]


def _pack_rows(trees: list[list[int]], hidden_size: int) -> list[list[list[int]]]:
    """Subtrees into packed rows. The batch is as wide as its fullest row (the others are padded to it) and
    attention over a row is dense, so a layout costs about rows x width x (1 + width / (2.5 x hidden_size)):
    the layers' matmuls are ~12 h^2 a token, dense attention ~2 h x width in flops but memory-bound, measured
    on CPU with SmolLM2 (h 576) at a token in a row of 800 costing 1.34x one in a row of 256. Best-fit
    decreasing at `PACK_TOKENS` a row (a larger subtree gets a row of its own) bounds the number of rows; for
    each count up to it, the smallest capacity that packs into that many rows; the cheapest layout wins.
    Below: WinoGrande's 6 contexts, which best-fit lays out in 6 rows of 287 (1,722 positions for 1,175
    tokens), go in 4 rows of at most 302 (1,208); 5 small subtrees that best-fit fills to 250 and 116 go in
    196 and 170.

    >>> rows = lambda sizes: [[len(t) for t in row] for row in _pack_rows([[0] * n for n in sizes], 576)]
    >>> rows((287, 285, 155, 152, 149, 147)), rows((120, 90, 80, 40, 36))
    ([[287], [285], [155, 147], [152, 149]], [[120, 40, 36], [90, 80]])
    """
    largest, total = max(map(len, trees)), sum(map(len, trees))
    layouts = []
    for n_rows in range(1, len(pack_bfd(trees, max(PACK_TOKENS, largest))) + 1):
        capacity = max(largest, -(-total // n_rows))
        while len(rows := pack_bfd(trees, capacity)) > n_rows:  # ends: at `total` it is one row
            capacity += max(1, capacity // 64)
        width = max(sum(map(len, row)) for row in rows)
        layouts.append((len(rows) * width * (1 + width / (2.5 * hidden_size)), -len(rows), rows))
    return min(layouts, key=lambda x: x[:2])[2]


def _length_key(unit: _Unit) -> tuple[int, tuple[int, ...]]:
    return -len(unit.ids), unit.ids


def _batches(items: list, size: int, weight) -> list[list]:
    """Consecutive runs of items weighing at most `size` in all (an item heavier than `size` goes alone)."""
    out: list[list] = []
    current: list = []
    load = 0
    for item in items:
        w = weight(item)
        if current and load + w > size:
            out.append(current)
            current, load = [], 0
        current.append(item)
        load += w
    if current:
        out.append(current)
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float rounding (relative to the largest logit): a wrong mask or position is far off."""
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) or 1.0
    tol = 1e-4 if b.dtype == torch.float32 else 3e-2
    return float((a.float() - b.float()).abs().max()) <= tol * scale
