"""`witune:robustness`: accuracy on a multiple-choice benchmark under prompt perturbations (`witune.eval.perturb`).

Usage: `witune:robustness[=BENCH[:rate=R][:shots=K][:seeds=N][:only=p1+p2]]`, BENCH arc_challenge (default) or
piqa, e.g. `witune:robustness=piqa:rate=0.1:shots=0`. Items: the first K items of the benchmark are the
few-shot examples, the next `--limit` (all by default) are scored. Each variant's prediction is the option label
with the highest log-likelihood after the prompt.

Rows (task `witune:robustness[=...]`): `clean_acc`; per perturbation P: `P_mean_acc`, `P_worst_acc` (over its
variants) and `P_drop` = clean_acc - P_mean_acc; over all perturbed variants: `mean_acc`, `worst_acc`, `drop`,
`worst_drop`. The sweep keeps `drop` and `worst_acc` as per-run diagnostic columns (never averaged with
benchmark scores).

The model is reached only through a `Scorer` (`loglikelihoods(contexts, continuations)`), so a planted scorer
with a known answer pattern can check the evaluator itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from witune.eval.perturb import PERTURBATIONS, MCItem, Variant, build_prompt, load_items, variants
from witune.eval.rows import MetricRow, metric_row

TASK = "witune:robustness"


class Scorer(Protocol):
    def loglikelihoods(self, contexts: Sequence[str], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each context, log P(continuation | context) of each of its continuations."""


class HFScorer:
    """Log-likelihoods from a causal LM. When every continuation is one token (option labels usually are),
    one forward pass per context reads them all from the last position; otherwise each pair is scored."""

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        self.device = next(model.parameters()).device

    def _ids(self, text: str, special: bool) -> list[int]:
        return self.tok(text, add_special_tokens=special)["input_ids"]

    @torch.no_grad()
    def _logps(self, seqs: list[list[int]], spans: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Per sequence: log-softmax of the positions in its span [a, b) only (never the whole
        batch x length x vocab tensor: that is gigabytes for a 50k vocabulary). Right-padded batches."""
        from witune.models import pad_token_id

        # Right padding: causal attention never lets a pad change a real position, so any id serves.
        pad = pad_token_id(self.tok)
        pad = 0 if pad is None else pad
        out = []
        for s in range(0, len(seqs), self.batch_size):
            chunk = seqs[s : s + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, x in enumerate(chunk):
                ids[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for i, (a, b) in enumerate(spans[s : s + self.batch_size]):
                out.append(torch.log_softmax(logits[i, a:b].float(), dim=-1).cpu())
        return out

    def loglikelihoods(self, contexts, continuations):
        ctx_ids = [self._ids(c, True) for c in contexts]
        cont_ids = [[self._ids(x, False) for x in conts] for conts in continuations]
        if all(len(t) == 1 for conts in cont_ids for t in conts):
            last = self._logps(ctx_ids, [(len(c) - 1, len(c)) for c in ctx_ids])
            return [[float(last[i][0, t[0]]) for t in conts] for i, conts in enumerate(cont_ids)]
        flat = [(i, j, c + t) for i, (c, conts) in enumerate(zip(ctx_ids, cont_ids)) for j, t in enumerate(conts)]
        spans = [(len(ctx_ids[i]) - 1, len(seq) - 1) for i, _, seq in flat]
        logps = self._logps([seq for _, _, seq in flat], spans)
        out = [[0.0] * len(conts) for conts in cont_ids]
        for (i, j, seq), lp in zip(flat, logps):
            targets = torch.tensor(seq[len(ctx_ids[i]) :])
            out[i][j] = float(lp.gather(1, targets[:, None]).sum())
        return out


@dataclass
class RobustnessSettings:
    bench: str = "arc_challenge"
    rate: float = 0.05  # typo rate per letter
    shots: int = 3  # few-shot examples (needed by fewshot_order)
    seeds: int = 3  # variants of the seeded perturbations
    perturbations: tuple[str, ...] = PERTURBATIONS


def parse_arg(arg: str | None) -> RobustnessSettings:
    """'piqa:rate=0.1:shots=0:seeds=2:only=typos+paraphrase' -> settings (errors name the bad part)."""
    s = RobustnessSettings()
    if not arg:
        return s
    bench, *opts = arg.split(":")
    s.bench = bench or s.bench
    for opt in opts:
        key, _, value = opt.partition("=")
        try:
            if key == "rate":
                s.rate = float(value)
                ok = 0 <= s.rate <= 1
            elif key in ("shots", "seeds"):
                setattr(s, key, int(value))
                ok = getattr(s, key) >= (0 if key == "shots" else 1)
            elif key == "only":
                s.perturbations = tuple(p for p in value.split("+") if p)
                ok = bool(s.perturbations) and all(p in PERTURBATIONS for p in s.perturbations)
            else:
                ok = False
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{TASK}: bad option {opt!r}; use rate=0..1, shots=N>=0, seeds=N>=1, only=<{'+'.join(PERTURBATIONS)}>"
            )
    return s


def variant_accuracies(
    scorer: Scorer, items: list[MCItem], shots: list[MCItem], vs: list[Variant], first_index: int = 0
) -> dict[str, float]:
    """{variant name: accuracy over `items`}."""
    out = {}
    for v in vs:
        built = [build_prompt(it, first_index + k, v, shots) for k, it in enumerate(items)]
        scores = scorer.loglikelihoods([p for p, _ in built], [c for _, c in built])
        hits = [max(range(len(s)), key=s.__getitem__) == it.gold for s, it in zip(scores, items)]
        out[v.name] = sum(hits) / len(hits)
    return out


def robustness_rows(
    scorer: Scorer,
    items: list[MCItem],
    settings: RobustnessSettings,
    seed: int = 0,
    limit: int | None = None,
    task: str = TASK,
) -> list[MetricRow]:
    """Score the clean prompt and every perturbed variant; return metric rows."""
    shots, scored = items[: settings.shots], items[settings.shots :]
    scored = scored[:limit] if limit is not None else scored
    if not scored:
        raise ValueError(f"{task}: no items to score after {settings.shots} few-shot examples")
    vs = variants(settings.perturbations, settings.rate, settings.seeds, seed, settings.shots)
    acc = variant_accuracies(scorer, scored, shots, vs, first_index=settings.shots)
    clean = acc["clean"]
    n = len(scored)

    def row(metric: str, value: float, stderr: float | None = None, higher: bool = True) -> MetricRow:
        return metric_row(task, metric, value, stderr, higher)

    rows = [row("clean_acc", clean, math.sqrt(clean * (1 - clean) / n) if n > 1 else None)]
    perturbed = []
    for p in settings.perturbations:
        values = [acc[v.name] for v in vs if v.perturbation == p]
        if not values:  # fewshot_order without shots
            continue
        perturbed += values
        mean = sum(values) / len(values)
        rows += [
            row(f"{p}_mean_acc", mean),
            row(f"{p}_worst_acc", min(values)),
            row(f"{p}_drop", clean - mean, higher=False),
        ]
    if perturbed:
        mean = sum(perturbed) / len(perturbed)
        rows += [
            row("mean_acc", mean),
            row("worst_acc", min(perturbed)),
            row("drop", clean - mean, higher=False),
            row("worst_drop", clean - min(perturbed), higher=False),
        ]
    rows.append(row("n_items", n))
    return rows


def robustness(model, tok, arg: str | None, opt) -> list[MetricRow]:
    """The built-in evaluator (`witune eval --tasks witune:robustness`)."""
    from witune.eval.local_tasks import default_data_dir

    settings = parse_arg(arg)
    data = default_data_dir()
    if data is None:
        raise FileNotFoundError(f"{TASK}: evaluation files not found; set WITUNE_EVAL_DATA to .../shared/data/eval")
    model.eval()
    return robustness_rows(
        HFScorer(model, tok, opt.batch_size), load_items(settings.bench, data), settings, seed=opt.seed, limit=opt.limit
    )
