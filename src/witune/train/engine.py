"""The training loop: accelerate for devices, processes and checkpoints; the normaliser counted per step.

One optimizer step s, on each of the W processes:

1. take this process's A micro-batches of the step from the global order (`witune.train.batches`);
2. count the normaliser candidates of those micro-batches (`normalizer_counts`: labels and weights only, no
   forward pass) and all-reduce them (sum, float64): Z is then the count over the *whole* step;
3. for each micro-batch: `loss = weighted_sum / Z * W` and backward (gradient sync only on the last one).
   DDP/FSDP average gradients over processes; the factor W undoes that average, so the accumulated gradient
   is exactly d(sum of w*nll over the step)/d(theta) / Z, however the step is split. A micro-batch with few
   tokens therefore never gets more say than its tokens (the gradient-accumulation bug of per-micro-batch means);
4. clip, optimizer step, scheduler step; log the reduced sums.

accelerate's `backward` divides by its gradient_accumulation_steps (DeepSpeed does the same internally); we
multiply by A beforehand so that the division cancels and the formula above holds on every backend.

How the model is spread over the processes (DDP, DeepSpeed, FSDP2) is `witune.train.distributed`'s business;
numeric precision is `witune.train.precision`'s; trackers are `witune.train.trackers`'s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from witune.data.collate import packed_collate, pad_collate
from witune.data.errors import ConfigError
from witune.loss import (
    IGNORE_INDEX,
    DynamicWeight,
    LossSums,
    dynamic_weight,
    normalizer_counts,
    normalizer_from_counts,
    safe_divide,
    weighted_nll,
)
from witune.loss.chunked import weighted_nll_from_hidden
from witune.train import distributed, runfolder, setup, trackers
from witune.train.batches import Schedule
from witune.train.checkpoint import CheckpointState, latest_checkpoint, load_checkpoint, save_checkpoint
from witune.train.config import TrainConfig, config_dict, to_yaml
from witune.train.metrics import SUM_KEYS, MetricsLog, logged_sums, postfix, progress_bar, step_metrics
from witune.train.precision import autocast_dtype


@dataclass
class TrainResult:
    output_dir: Path
    model_dir: Path
    metrics_path: Path
    steps: int  # optimizer steps done in total
    final_loss: float  # loss of the last step (nan when no step ran in this call)
    seconds: float  # wall time of this call
    resumed_from: Path | None = None


class _Batcher:
    """Row indices -> tensors on the device; an empty micro-batch becomes one row with nothing to train, so
    every process still runs forward and backward (collectives never hang) while contributing zero. `pack`:
    a unit is a packed row (greedy, bfd), or one sample, padded (none) or joined with the rest of its
    micro-batch into one row (padding_free: the same samples as none, no padding)."""

    def __init__(self, units: list[list[Any]], pad_token_id: int, pack: str, device: torch.device):
        self.units, self.pad, self.pack, self.device = units, pad_token_id, pack, device

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        chosen = [self.units[i] for i in (indices or [0])]
        if self.pack == "none":
            batch = pad_collate([u[0] for u in chosen], self.pad)
        elif self.pack == "padding_free":
            batch = packed_collate([[u[0] for u in chosen]], self.pad)
        else:
            batch = packed_collate(chosen, self.pad)
        if not indices:
            batch["labels"].fill_(IGNORE_INDEX)
            batch["weights"].zero_()
            batch["response_mask"].zero_()
        # the step's `tokens` metric: real tokens, however the rows were laid out (never given to the model)
        batch["n_tokens"] = torch.tensor(sum(len(r) for u in chosen for r in u) if indices else 0)
        return {k: v.to(self.device) for k, v in batch.items()}


def _accelerator(cfg: TrainConfig, grad_accum: int) -> Any:
    from accelerate import Accelerator

    return Accelerator(
        gradient_accumulation_steps=grad_accum,
        mixed_precision=autocast_dtype(cfg.precision),
        project_dir=cfg.output_dir,
        **distributed.accelerator_kwargs(cfg),
    )


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Run (or, with `resume`, continue) a training run as configured; returns where everything went.
    A non-empty output_dir needs `resume` or `overwrite` (see `witune.train.runfolder`)."""
    from accelerate.utils import set_seed

    from witune.atomic import atomic_write_text

    cfg.validate()
    out = Path(cfg.output_dir)
    runfolder.check_run_folder(out, resume, overwrite, (cfg.model, cfg.tokenizer, cfg.data))  # before any work
    tracker_names = trackers.parse(cfg.report_to)
    trackers.check_installed(tracker_names)
    start_time = time.perf_counter()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    world = distributed.world_size()
    grad_accum = setup.grad_accum(cfg, world)
    acc = _accelerator(cfg, grad_accum)
    acc.wait_for_everyone()  # every process has checked the folder before the main one writes into it
    set_seed(cfg.seed)

    tokenizer = setup.load_tokenizer(cfg)
    units = setup.load_units(cfg, tokenizer, quiet=not acc.is_main_process)
    model = setup.load_model(cfg)
    if cfg.fsdp:
        model = distributed.shard(model, acc, cfg.precision)  # before the optimizer: it holds the shards
    # fused AdamW on plain tensors only: FSDP2 shards are DTensors and DeepSpeed wraps the optimizer itself
    optimizer = setup.build_optimizer(cfg, model, fused=not cfg.fsdp and not distributed.uses_deepspeed(acc))
    schedule = Schedule(len(units), cfg.per_device_batch_size, grad_accum, acc.num_processes, cfg.seed, cfg.drop_last)
    if schedule.steps_per_epoch == 0:
        raise ConfigError(f"{len(units)} rows < one global batch of {schedule.global_batch} with drop_last")
    total = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * schedule.steps_per_epoch
    scheduler = setup.build_scheduler(cfg, optimizer, total)
    if not cfg.fsdp:
        distributed.configure_deepspeed(acc, cfg, grad_accum)
        model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process

    start, resumed_from = 0, None
    ckpt_root = out / "checkpoints"
    fingerprint = runfolder.data_fingerprint(units)
    if resume:
        resumed_from = latest_checkpoint(ckpt_root)
        if resumed_from is not None:
            # Checked from the JSON state before load_state unpickles anything of the checkpoint.
            state = CheckpointState.read(resumed_from)
            runfolder.check_resume(
                resumed_from,
                state.config or runfolder.previous_config(out),
                cfg,
                state,
                fingerprint,
                len(units),
                schedule.global_batch,
                total,
            )
            start = int(load_checkpoint(acc, resumed_from).step or 0)
            if cfg.fsdp:
                distributed.load_sharded(model, optimizer, resumed_from)
            lr = runfolder.sync_learning_rate(scheduler)
            acc.print(f"resuming from {resumed_from} (step {start}/{total})")
            if state.total_steps not in (None, total):
                acc.print(
                    f"the run's length changed from {state.total_steps} to {total} optimizer steps: the "
                    f"learning-rate schedule is recomputed for {total} steps; step {start + 1} runs at lr {lr:.3g}"
                )
        else:
            runfolder.check_resume(out, runfolder.previous_config(out), cfg)
            acc.print(f"no complete checkpoint in {ckpt_root}: starting from scratch")
    record = runfolder.RunRecord(out) if acc.is_main_process and resume else None
    if acc.is_main_process:
        # Only now, with data and model loaded and the resume checked, does the folder change.
        if overwrite:
            runfolder.clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", to_yaml(cfg))
    acc.wait_for_everyone()
    scalars = {k: v for k, v in config_dict(cfg).items() if isinstance(v, (int, float, str, bool))}
    tracked = trackers.Trackers(tracker_names, out, scalars, acc.is_main_process, resume_step=start)

    norm = cfg.normalization  # parsed when the config was read: a name or a number
    batcher = _Batcher(units, setup.pad_id(tokenizer), cfg.pack, acc.device)
    log = MetricsLog(out / "metrics.jsonl", acc.is_main_process, resume_step=start)
    # stop_at_step ends this call early (a rung of successive halving); the schedule above stays `total`'s.
    end = min(cfg.stop_at_step, total) if cfg.stop_at_step > 0 else total
    if start > end:
        raise ConfigError(f"stop_at_step={cfg.stop_at_step}: the run's checkpoint is already at step {start}")
    bar = progress_bar(total, start, cfg.progress and acc.is_main_process)
    last = None
    rule = dynamic_weight(cfg.dynamic_weight, cfg.dynamic_weight_args)  # built once: a rule may hold state
    for step in range(start, end):
        epoch, in_epoch = schedule.locate(step)
        batches = [batcher(ix) for ix in schedule.micro_batches(epoch, in_epoch, acc.process_index)]
        t0 = time.perf_counter()
        z, sums, tokens, grad_norm, applied = _optimizer_step(
            acc,
            model,
            optimizer,
            batches,
            norm,
            cfg.max_grad_norm,
            grad_accum,
            cfg.chunked_loss,
            cfg.loss_backend,
            rule,
        )
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        n_samples = len(schedule.step_indices(epoch, in_epoch))
        last = step_metrics(
            sums,
            z,
            step=step + 1,
            epoch=epoch + (in_epoch + 1) / schedule.steps_per_epoch,
            lr=lr,
            grad_norm=grad_norm,
            tokens=tokens,
            seconds=time.perf_counter() - t0,
            samples=n_samples,
            elapsed=time.perf_counter() - start_time,
        )
        if not applied:  # every process skipped the update of this step: stop before anything is saved
            bar.close()
            if record is not None:
                record.restore()
            tracked.close()
            _release(acc)
            torch.use_deterministic_algorithms(was_deterministic)
            samples = [r.location for i in schedule.step_indices(epoch, in_epoch) for r in units[i]]
            raise _diverged(step + 1, last.loss, grad_norm, samples, latest_checkpoint(ckpt_root))
        if (step + 1) % cfg.log_every == 0 or step + 1 in (total, end):
            log.write(last)  # first: the run's own record never depends on a tracker
            tracked.log({f"train/{k}": v for k, v in vars(last).items() if k != "step"}, step=step + 1)
        bar.set_postfix(postfix(last), refresh=False)
        bar.update(1)
        stopping = step + 1 == end < total  # a later --resume continues from here, exactly
        if stopping or (cfg.save_every > 0 and (step + 1) % cfg.save_every == 0):
            save_checkpoint(
                acc,
                ckpt_root,
                step + 1,
                CheckpointState(
                    step=step + 1,
                    epoch=epoch,
                    step_in_epoch=in_epoch + 1,
                    total_steps=total,
                    config=config_dict(cfg),
                    rows=len(units),
                    data_sha256=fingerprint,
                    global_batch=schedule.global_batch,
                ),
                keep=cfg.save_total_limit,
                save_extra=(lambda folder: distributed.save_sharded(model, optimizer, folder)) if cfg.fsdp else None,
            )
    bar.close()
    try:
        model_dir = _save_final(acc, model, tokenizer, cfg, out)
    except BaseException:
        if record is not None:
            record.restore()  # model/ is still the old one: so is what describes it
        raise
    tracked.close()
    result = TrainResult(
        out,
        model_dir,
        out / "metrics.jsonl",
        end,
        last.loss if last else float("nan"),
        time.perf_counter() - start_time,
        resumed_from,
    )
    _release(acc)
    torch.use_deterministic_algorithms(was_deterministic)
    return result


def _diverged(step: int, loss: float, grad_norm: float, samples: list[Any], checkpoint: Path | None) -> ConfigError:
    """The error that stops a run at a non-finite loss or gradient norm. The step's update was not applied
    (`_optimizer_step`), so no checkpoint ever holds NaN parameters; nothing more is saved (a NaN model never
    replaces model/), and the last checkpoint is the last good state."""
    what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
    shown = ", ".join(str(s) for s in samples[:3]) + (f" and {len(samples) - 3} more" if len(samples) > 3 else "")
    kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written before it"
    return ConfigError(
        f"step {step}: {what} (not finite), so training stopped before applying it and no model was saved; "
        f"{kept}; the step's samples: {shown} (lower learning_rate or the data's weights)"
    )


def _optimizer_step(
    acc: Any,
    model: Any,
    optimizer: Any,
    batches: list[dict[str, torch.Tensor]],
    norm: str | float,
    max_grad_norm: float,
    grad_accum: int,
    chunked: bool = False,
    loss_backend: str = "auto",
    dynamic: DynamicWeight | None = None,
) -> tuple[float, torch.Tensor, float, float, bool]:
    """One optimizer step over this process's micro-batches; returns (Z, reduced SUM_KEYS, tokens, grad norm,
    applied). A step whose loss (on any process) or gradient norm is not finite is not applied (`applied` False):
    one such update makes every parameter NaN. DeepSpeed steps inside `backward`, where nothing can be skipped."""
    local = sum(normalizer_counts(b["labels"], b["weights"]) for b in batches)
    assert isinstance(local, torch.Tensor)  # a step always has micro-batches, so sum() never returns its start 0
    counts = acc.reduce(local.to(acc.device), reduction="sum")  # the whole step, every process
    z = normalizer_from_counts(counts, norm)
    # accelerate divides the loss by grad_accum in backward (DeepSpeed too): multiply it back in.
    scale = acc.num_processes * grad_accum
    model.train()
    logged = torch.zeros(len(SUM_KEYS), dtype=torch.float64, device=acc.device)
    tokens = torch.zeros((), dtype=torch.float64, device=acc.device)
    grad_norm = float("nan")
    overflowed = torch.zeros((), device=acc.device)
    applied = True
    for batch in batches:
        with acc.accumulate(model):
            sums = _forward_sums(acc, model, batch, chunked, loss_backend, dynamic)
            overflowed += (~torch.isfinite(sums.weighted_sum.detach())).float()
            acc.backward(safe_divide(sums.weighted_sum, z) * scale)
            if acc.sync_gradients:
                bad_norm = False
                if max_grad_norm > 0:
                    norm_value = acc.clip_grad_norm_(model.parameters(), max_grad_norm)
                    if norm_value is not None:  # DeepSpeed clips itself (and may not report the norm)
                        grad_norm = distributed.as_float(norm_value)
                        bad_norm = not math.isfinite(grad_norm)
                applied = not bad_norm and float(acc.reduce(overflowed, reduction="sum")) == 0
                if applied:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        logged += logged_sums(sums)
        tokens += float(batch["n_tokens"])
    reduced = acc.reduce(torch.cat([logged, tokens[None]]), reduction="sum")
    return float(z), reduced[:-1].cpu(), float(reduced[-1]), grad_norm, applied


def _forward_sums(
    acc: Any,
    model: Any,
    batch: dict[str, torch.Tensor],
    chunked: bool,
    loss_backend: str = "auto",
    dynamic: DynamicWeight | None = None,
) -> LossSums:
    """Forward one micro-batch through the (wrapped) model and return its loss sums.

    Chunked: the model runs as usual (so DDP/FSDP hooks fire) but keeps the logits of one position only;
    the loss is computed from the final hidden states and the output projection chunk by chunk. The one
    kept position doubles as a check that the last hidden state really is what the output head sees
    (models that post-process logits, e.g. soft-capping, cannot use the chunked loss).
    """
    inputs: dict[str, torch.Tensor] = {
        k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch
    }
    labels, weights, response = batch["labels"], batch["weights"], batch["response_mask"]
    side = None
    if dynamic is not None:  # a dynamic weight's own per-token input (labels are shifted once, as it expects)
        with torch.no_grad():
            side = dynamic.side_input(inputs, labels)
    if not chunked:
        logits = model(**inputs, use_cache=False).logits
        return weighted_nll(logits, labels, weights, response, dynamic=dynamic, side=side)
    out = model(**inputs, use_cache=False, logits_to_keep=1, output_hidden_states=True)
    hidden = out.hidden_states[-1]
    head = distributed.unwrap(acc, model).get_output_embeddings()
    with torch.no_grad():
        expected = head(hidden[:, -1:]).float()
    if not torch.allclose(expected, out.logits.float(), rtol=1e-2, atol=1e-2):
        raise ConfigError(
            "chunked_loss: this model's logits are not its output projection of the last hidden "
            "state (post-processed logits?); train with chunked_loss: false"
        )
    return weighted_nll_from_hidden(
        hidden,
        head.weight,
        labels,
        weights,
        response,
        lm_head_bias=getattr(head, "bias", None),
        backend=loss_backend,
        dynamic=dynamic,
        side=side,
    )


def _save_final(acc: Any, model: Any, tokenizer: Any, cfg: TrainConfig, out: Path) -> Path:
    """`out/model`: a plain HF folder (weights, config, generation config, tokenizer), written into a temporary
    folder and swapped in whole: a full disk or a kill mid-save leaves the previous model/ as it was."""
    from witune.atomic import atomic_dir

    model_dir = out / "model"
    acc.wait_for_everyone()
    state = distributed.full_state_dict(acc, model, cfg.fsdp)  # gathers shards; every process must call it
    if acc.is_main_process:
        unwrapped = distributed.unwrap(acc, model)
        note = None
        with atomic_dir(model_dir) as tmp, distributed.deepspeed_unprobed(acc):
            if cfg.lora_r > 0 and cfg.merge_lora:
                unwrapped.merge_and_unload().save_pretrained(tmp)
            elif cfg.lora_r > 0:
                unwrapped.save_pretrained(tmp, state_dict=state)
                note = (
                    f"This folder holds a LoRA adapter (peft) for the base model {cfg.model!r}; load it with "
                    "peft.AutoPeftModelForCausalLM, or train with merge_lora: true for a merged model.\n"
                )
            else:
                unwrapped.save_pretrained(tmp, state_dict=state)
            setup.save_tokenizer_and_note(tokenizer, tmp, note)
    acc.wait_for_everyone()
    return model_dir


def _release(acc: Any) -> None:
    """Let a later `train` call in the same process build a fresh Accelerator (tests, sweeps, the demo), with
    other settings (precision, DeepSpeed stage) too. With several processes the process group (PartialState)
    stays: a later Accelerator finds it initialised and reuses it."""
    from accelerate.state import AcceleratorState, GradientState

    acc.wait_for_everyone()
    acc.free_memory()
    AcceleratorState._reset_state()
    GradientState._reset_state()
