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
- **A shared context runs once.** Requests whose inputs agree on everything before their scored positions (the
  choices of a multiple-choice item) form a group; the group's longest common prefix (the context, and the
  first continuation tokens when the choices share them) runs once, and each choice runs only the rest of its
  own continuation. Groups are packed into rows (`PACK_TOKENS`) with a 4D attention mask: a choice's tokens
  see their group's prefix and themselves, causally, nothing else, and `position_ids` continue the prefix.
  Identical requests run once. Grouping is by the exact ids after truncation, so a truncated request only
  shares what it really shares.
- **Length-sorted batches**, longest first as in `HFLM`; a call holds at most `batch_size` distinct inputs.

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

log = logging.getLogger(__name__)

# Tokens per packed row of the shared-prefix path (a longer group gets a row of its own): attention over a
# packed row is dense, so short groups share rows of this size (its cost is a few % of the layers' matmuls).
PACK_TOKENS = 256

Request = tuple[tuple[str, str] | None, list[int], list[int]]


@dataclass
class _Unit:
    """One distinct model input (stock HFLM's ids) whose last `scored` positions are scored, with the requests
    (index, continuation ids) answered from it: identical requests run once."""

    ids: tuple[int, ...]
    scored: int
    requests: list[tuple[int, list[int]]] = field(default_factory=list)


@dataclass
class _Group:
    """Units with the same unscored part (the choices of one item). `shared` = their longest common prefix,
    kept one token short of the shortest input (each unit keeps a suffix of its own); positions from
    `scored_from` on are scored, those inside the shared prefix once for all units."""

    units: list[_Unit]
    shared: int = 0
    scored_from: int = 0

    def __post_init__(self) -> None:
        self.scored_from = len(self.units[0].ids) - self.units[0].scored
        first, limit = self.units[0].ids, min(len(u.ids) for u in self.units) - 1
        k = self.scored_from
        while k < limit and all(u.ids[k] == first[k] for u in self.units):
            k += 1
        self.shared = k

    @property
    def packed_length(self) -> int:
        return self.shared + sum(len(u.ids) - self.shared for u in self.units)


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

    def _shared_logits(self, groups: list[_Group]) -> list[torch.Tensor]:
        """Each unit's scored logits (groups in order, units in order) from packed rows: a group is its shared
        prefix once, then each unit's own suffix; a 4D mask lets a suffix see its group's prefix and itself
        (causally) and nothing else, and `position_ids` continue the prefix in every suffix. No cache, no
        padding inside a row; the prefix's scored positions are computed once for all units."""
        capacity = max(PACK_TOKENS, max(g.packed_length for g in groups))
        rows: list[list[_Group]] = []
        for g in groups:  # sorted longest first by the caller: first fit into the rows opened so far
            for row in rows:
                if sum(x.packed_length for x in row) + g.packed_length <= capacity:
                    row.append(g)
                    break
            else:
                rows.append([g])
        width = max(sum(g.packed_length for g in row) for row in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        pos = torch.zeros(len(rows), width, dtype=torch.long)
        grp = torch.full((len(rows), width), -1, dtype=torch.long)  # -1: padding
        seg = torch.full((len(rows), width), -1, dtype=torch.long)  # 0: shared prefix, j: the j-th unit's suffix
        keep = torch.zeros(len(rows), width, dtype=torch.bool)
        where: dict[int, tuple[int, int]] = {}  # id(group) -> (row, start of its prefix)
        suffix_at: dict[int, int] = {}  # id(unit) -> start of its suffix
        for r, row in enumerate(rows):
            t = 0
            for gi, g in enumerate(row):
                where[id(g)] = (r, t)
                k = g.shared
                ids[r, t : t + k] = torch.tensor(g.units[0].ids[:k])
                pos[r, t : t + k] = torch.arange(k)
                grp[r, t : t + k], seg[r, t : t + k] = gi, 0
                keep[r, t + g.scored_from : t + k] = True
                t += k
                for j, u in enumerate(g.units, start=1):
                    n = len(u.ids) - k
                    suffix_at[id(u)] = t
                    ids[r, t : t + n] = torch.tensor(u.ids[k:])
                    pos[r, t : t + n] = torch.arange(k, len(u.ids))
                    grp[r, t : t + n], seg[r, t : t + n] = gi, j
                    keep[r, t : t + n] = True
                    t += n
        idx = torch.arange(width)
        allowed = (
            (grp[:, :, None] == grp[:, None, :])
            & (idx[None, None, :] <= idx[None, :, None])
            & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
        )
        allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding sees itself: no row is fully masked
        logits, _ = self._forward(
            ids.to(self.device),
            keep.to(self.device),
            attention_mask=self._mask(allowed[:, None]).to(self.device),
            position_ids=pos.to(self.device),
        )
        flat = torch.cumsum(keep.flatten(), 0).sub_(1).view(len(rows), width)  # (row, t) -> index in logits
        out = []
        for g in groups:
            r, t = where[id(g)]
            head = flat[r, t + g.scored_from : t + g.shared]
            for u in g.units:
                a = suffix_at[id(u)]
                out.append(logits[torch.cat([head, flat[r, a : a + len(u.ids) - g.shared]]).to(logits.device)])
        return out

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
        """The shared-prefix path against plain forwards on two small groups: two prefix lengths (a padding
        gap), scored positions inside one shared prefix."""
        gen = torch.Generator().manual_seed(0)
        vocab = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
        t = tuple(torch.randint(0, vocab, (12,), generator=gen).tolist())
        groups = [
            _Group([_Unit(t[:10], 4), _Unit(t[:7] + t[9:11], 3)]),  # shares t[:7], scored from 6
            _Group([_Unit(t[:6], 2), _Unit(t[:4] + t[:1], 1)]),  # shares t[:4], scored from 4
        ]
        why = self._can_pack()
        if why is not None:
            log.warning("witune LM: shared prefixes off for %s (%s)", type(self.model).__name__, why)
            return False
        try:
            shared = self._shared_logits(groups)
            plain = self._plain_logits([u for g in groups for u in g.units])
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
        by_context: dict[tuple[int, ...], list[_Unit]] = {}
        for u in units.values():
            by_context.setdefault(u.ids[: len(u.ids) - u.scored], []).append(u)
        if self.share_prefix and self._prefix_ok is None and any(len(us) > 1 and c for c, us in by_context.items()):
            self._prefix_ok = self._probe_prefix()
        share = self.share_prefix and bool(self._prefix_ok)
        groups = [_Group(us) for c, us in by_context.items() if share and c and len(us) > 1]
        single = [u for c, us in by_context.items() if not (share and c and len(us) > 1) for u in us]

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

        # Longest first, as HFLM does (a batch's first member sets its padded width; memory errors come early);
        # a batch holds at most batch_size model rows (distinct inputs), as HFLM's batches do.
        for batch in _batches(sorted(single, key=_length_key), batch_size, lambda u: 1):
            for unit, logits in zip(batch, self._plain_logits(batch)):
                answer(unit, logits)
        for gbatch in _batches(
            sorted(groups, key=lambda g: _length_key(max(g.units, key=_length_key))),
            batch_size,
            lambda g: len(g.units),
        ):
            for unit, logits in zip([u for g in gbatch for u in g.units], self._shared_logits(gbatch)):
                answer(unit, logits)
        pbar.close()
        assert all(r is not None for r in res)
        return res  # type: ignore[return-value]


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
