"""Per-step training metrics: computed from the step's reduced loss sums, appended to `metrics.jsonl`,
sent to accelerate trackers, and shown on a progress bar."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from witune.loss import LossSums

# Order of the quantities that are summed over micro-batches and processes for logging.
SUM_KEYS = ("weighted_sum", "prompt_nll", "prompt_tokens", "response_nll", "response_tokens", "response_weighted")


def logged_sums(sums: LossSums) -> torch.Tensor:
    """One micro-batch's SUM_KEYS as a float64 vector, in SUM_KEYS order (fields named, not looked up by string,
    so a renamed `LossSums` field is a type error rather than a run-time AttributeError)."""
    fields = (
        sums.weighted_sum,
        sums.prompt_nll,
        sums.prompt_tokens,
        sums.response_nll,
        sums.response_tokens,
        sums.response_weighted,
    )
    return torch.stack([x.detach().to(torch.float64) for x in fields])


@dataclass
class StepMetrics:
    step: int  # 1-based optimizer step
    epoch: float  # fractional epoch at the end of the step
    loss: float  # the step's loss: sum of w*nll over the step / Z (what the gradient is of)
    prompt_nll: float  # unweighted NLL per prompt token in the step (nan without prompt tokens)
    response_nll: float  # unweighted NLL per response token
    response_share: float  # share of the weighted loss that comes from response tokens
    normalizer: float  # Z of the step
    lr: float
    grad_norm: float  # before clipping
    tokens_per_s: float  # non-padding tokens processed per second, all processes
    tokens: float  # non-padding tokens processed in the step, all processes (what a sweep's budget counts)
    samples: int  # samples (or packed rows) in the step, all processes
    elapsed_s: float


def step_metrics(
    sums: torch.Tensor,
    z: float,
    *,
    step: int,
    epoch: float,
    lr: float,
    grad_norm: float,
    tokens: float,
    seconds: float,
    samples: int,
    elapsed: float,
) -> StepMetrics:
    """`sums` holds SUM_KEYS (already reduced over processes)."""
    s = dict(zip(SUM_KEYS, (float(x) for x in sums)))

    def ratio(a: float, b: float) -> float:
        return a / b if b else math.nan

    return StepMetrics(
        step=step,
        epoch=epoch,
        loss=s["weighted_sum"] / z if z else 0.0,
        prompt_nll=ratio(s["prompt_nll"], s["prompt_tokens"]),
        response_nll=ratio(s["response_nll"], s["response_tokens"]),
        response_share=ratio(s["response_weighted"], s["weighted_sum"]),
        normalizer=z,
        lr=lr,
        grad_norm=grad_norm,
        tokens_per_s=ratio(tokens, seconds),
        tokens=tokens,
        samples=samples,
        elapsed_s=elapsed,
    )


class MetricsLog:
    """Append-only JSONL log (main process only). On resume, lines after the resumed step are dropped, so the
    log of a resumed run reads like that of an uninterrupted one."""

    def __init__(self, path: str | Path, enabled: bool, resume_step: int = 0):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        from witune.atomic import atomic_write_text

        kept = []
        if resume_step > 0 and self.path.is_file():
            kept = [ln for ln in self.path.read_text(errors="replace").splitlines() if _step(ln) <= resume_step]
        atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))

    # Appends stay appends (one line per logged step); a kill can only cut the last line, which the next
    # resume drops (see _step) along with every line after the checkpoint it resumes from.
    def write(self, m: StepMetrics) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(asdict(m)) + "\n")


def _step(line: str) -> float:
    """The step of a metrics line; inf for a line a kill cut short (so that a resume drops it)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc="training", unit="step", disable=not enabled, dynamic_ncols=True)


def postfix(m: StepMetrics) -> dict[str, Any]:
    return {
        "loss": f"{m.loss:.4f}",
        "resp_nll": f"{m.response_nll:.3f}",
        "lr": f"{m.lr:.2e}",
        "tok/s": f"{m.tokens_per_s:.0f}",
    }


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The metrics log as a list of dicts."""
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
