"""`run_dpo(cfg)`: TRL's DPOTrainer on a `witune train` model, with witune's run-folder conventions.

TRL does the preference optimisation (loss, reference log-probs, reward metrics); this module only wires it
to witune: the start model (adapters merged, see `witune.dpo.model`), checked preference data
(`witune.dpo.data`), `metrics.jsonl`, and atomic checkpoints. The Trainer writes each checkpoint into a
staging folder (`.trainer/checkpoint-N`, which it does not write atomically); only when the Trainer reports
it saved (`on_save`, after `trainer_state.json`, its last file) is the folder renamed to `checkpoints/step-N`,
so `checkpoints/` only ever holds complete checkpoints, found with `witune.train.checkpoint`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from witune.atomic import atomic_dir, atomic_write_text
from witune.data.errors import ConfigError
from witune.dpo.config import DPOConfig, to_yaml
from witune.train import runfolder
from witune.train.checkpoint import CheckpointState, latest_checkpoint, publish_checkpoint
from witune.train.config import config_dict
from witune.train.runfolder import check_run_folder, clear_run

STAGING = ".trainer"
# witune's own state in each DPO checkpoint (TRL's trainer_state.json holds neither the settings nor the data):
# what a resume is checked against, as `witune train` checks its checkpoints.
WITUNE_STATE = "witune_state.json"
LOGGED = (
    "loss",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "logps/rejected",
    "learning_rate",
    "grad_norm",
)


def require_trl() -> None:
    """TRL is an optional dependency: only `witune dpo` needs it."""
    try:
        import trl  # noqa: F401
    except ImportError:
        raise ConfigError('witune dpo needs TRL, which is not installed: pip install "witune[trl]"') from None


@dataclass
class DPOResult:
    output_dir: Path
    model_dir: Path
    metrics_path: Path
    steps: int
    final_loss: float
    seconds: float
    resumed_from: Path | None = None
    eval: dict[str, dict[str, float]] = field(default_factory=dict)  # {"before": {...}, "after": {...}}


def _callbacks(out: Path, keep: int, start_time: float, run_state: CheckpointState):
    from transformers import TrainerCallback

    class WitCallback(TrainerCallback):
        """metrics.jsonl lines and the atomic rename of each finished checkpoint (with witune's state in it)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return  # eval logs (eval_*) and the final summary go to eval.json / the result
            row = {"step": state.global_step, "epoch": state.epoch}
            row.update({k.replace("/", "_"): float(logs[k]) for k in LOGGED if k in logs})
            row["elapsed_s"] = time.perf_counter() - start_time
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            src = out / STAGING / f"checkpoint-{state.global_step}"
            atomic_write_text(src / WITUNE_STATE, json.dumps(run_state.to_json()))
            root = out / "checkpoints"
            root.mkdir(exist_ok=True)
            publish_checkpoint(src, root / f"step-{state.global_step}", keep)

    return [WitCallback()]


def _split(records: list[dict], cfg: DPOConfig) -> tuple[list[dict], list[dict]]:
    if cfg.eval_data:
        from witune.dpo.data import load_preferences

        return records, load_preferences(cfg.eval_data, "skip" if cfg.skip_bad else "raise").records
    if cfg.eval_fraction <= 0:
        return records, []
    order = list(range(len(records)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, round(cfg.eval_fraction * len(records)))
    if n_eval >= len(records):
        raise ConfigError(f"config key 'eval_fraction' {cfg.eval_fraction} leaves no training pairs of {len(records)}")
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def _trl_args(cfg: DPOConfig, staging: Path):
    from trl import DPOConfig as TRLDPOConfig

    trackers = [t.strip() for t in cfg.report_to.split(",") if t.strip() and t.strip() != "none"]
    return TRLDPOConfig(
        output_dir=str(staging),
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        lr_scheduler_type="constant_with_warmup" if cfg.lr_scheduler == "constant" else cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1) is a ratio of all steps (transformers 5)
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.log_every,
        save_strategy="steps" if cfg.save_every > 0 else "no",
        save_steps=cfg.save_every if cfg.save_every > 0 else 500,
        save_total_limit=None,
        report_to=trackers or "none",
        disable_tqdm=not cfg.progress,
        bf16=cfg.precision == "bf16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        beta=cfg.beta,
        loss_type=[cfg.loss_type],
        label_smoothing=cfg.label_smoothing,
        max_length=cfg.max_length,
        eval_strategy="no",
        dataloader_num_workers=0,
    )


def run_dpo(cfg: DPOConfig, resume: bool = False, overwrite: bool = False) -> DPOResult:
    """Run (or, with `resume`, continue from the newest complete checkpoint) a DPO run as configured.

    A non-empty `output_dir` needs `resume` or `overwrite` (the same protection as `witune train`); with
    `overwrite`, the old run is removed only once data and model have loaded."""
    require_trl()
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOTrainer

    from witune.dpo.data import load_preferences
    from witune.dpo.model import load_start_model, load_start_tokenizer
    from witune.train.metrics import MetricsLog

    cfg.validate()
    start_time = time.perf_counter()
    out = Path(cfg.output_dir)
    check_not_start_folder(cfg, out)
    check_run_folder(out, resume, overwrite, (cfg.model, cfg.data))
    set_seed(cfg.seed)

    prefs = load_preferences(cfg.data, "skip" if cfg.skip_bad else "raise", cfg.split, cfg.limit)
    for e in prefs.skipped:
        print(f"skipped: {e}")
    train_recs, eval_recs = _split(prefs.records, cfg)
    state = CheckpointState(
        config=config_dict(cfg), rows=len(prefs.records), data_sha256=pairs_fingerprint(prefs.records)
    )
    resumed_from = latest_checkpoint(out / "checkpoints") if resume else None
    resume_step = _check_resume(out, cfg, resumed_from, state) if resume else 0  # before the model is loaded
    tok = load_start_tokenizer(cfg.model, cfg.tokenizer)
    if prefs.conversational and not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"{cfg.data}: conversational pairs need a tokenizer with a chat template; "
            f"{cfg.tokenizer or cfg.model} has none"
        )
    model = load_start_model(cfg.model, dtype=torch.float32)
    # Data and model loaded, the resume checked: only now touch the folder (a run that fails early or is refused
    # leaves an old run as it was).
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        clear_run(out, extra=("eval.json",))
    atomic_write_text(out / "config.yaml", to_yaml(cfg))
    shutil.rmtree(out / STAGING, ignore_errors=True)  # a crash mid-save left at most an incomplete checkpoint
    MetricsLog(out / "metrics.jsonl", True, resume_step=resume_step)  # truncates lines after the resumed step
    model.config.use_cache = False
    peft_config = cfg.peft_config()  # with LoRA, the reference is the start model with the new adapter disabled
    # Without it, a frozen copy of the start model: TRL would otherwise reload it by name, which a merged adapter lacks
    ref_model = copy.deepcopy(model).eval() if peft_config is None else None
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=_trl_args(cfg, out / STAGING),
        train_dataset=Dataset.from_list(train_recs),
        eval_dataset=Dataset.from_list(eval_recs) if eval_recs else None,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=_callbacks(out, cfg.save_total_limit, start_time, state),
    )
    assert isinstance(trainer.train_dataset, Dataset)  # TRL maps the Dataset given above into another Dataset
    if len(trainer.train_dataset) == 0:  # TRL drops pairs whose prompt alone fills max_length
        raise ConfigError(
            f"{cfg.data}: every one of the {len(train_recs)} training pairs has a prompt of "
            f"max_length={cfg.max_length} tokens or more; raise max_length"
        )
    if not cfg.progress:  # without a bar, the Trainer prints every log dict: metrics.jsonl has them already
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    evals: dict[str, dict[str, float]] = {}
    eval_file = out / "eval.json"
    if eval_recs:
        if resumed_from is not None and eval_file.is_file():
            evals = json.loads(eval_file.read_text())  # "before" was measured by the first attempt
        else:
            evals["before"] = trainer.evaluate()
    if resumed_from is not None:
        print(f"resuming from {resumed_from} (step {resume_step})")
    elif resume:
        print(f"no complete checkpoint in {out / 'checkpoints'}: starting from scratch")
    train_out = trainer.train(resume_from_checkpoint=str(resumed_from) if resumed_from else None)
    if eval_recs:
        evals["after"] = trainer.evaluate()
        atomic_write_text(eval_file, json.dumps(evals, indent=1))
    model_dir = _save_final(trainer, tok, cfg, out)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    losses = [json.loads(ln)["loss"] for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return DPOResult(
        out,
        model_dir,
        out / "metrics.jsonl",
        int(train_out.global_step),
        losses[-1] if losses else float("nan"),
        time.perf_counter() - start_time,
        resumed_from,
        evals,
    )


def check_not_start_folder(cfg: DPOConfig, out: Path) -> None:
    """The run DPO starts from is read-only to it: `output_dir` must not be the start model's folder (nor the
    tokenizer's), lie inside it, or hold it. Else `--overwrite` deleted the SFT run and `--resume` replaced its
    config.yaml. A sibling (a sweep's `runs/ID/model` -> `runs/ID/dpo`) is fine."""
    target = out.expanduser().resolve()
    for key in ("model", "tokenizer"):
        value = getattr(cfg, key)
        if not value or not Path(value).expanduser().exists():  # a hub name or an alias: nothing local to protect
            continue
        start = Path(value).expanduser().resolve()
        if target == start:
            where = "is"
        elif start in target.parents:
            where = "is inside"
        elif target in start.parents:
            where = "holds"
        else:
            continue
        raise ConfigError(
            f"output_dir {out} {where} the start {key} {value}: DPO never writes into the run it starts from; "
            "choose another output_dir"
        )


def pairs_fingerprint(records: list[dict]) -> str:
    """sha256 of the preference pairs in order: a resume on other pairs (a swapped file) is refused."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _check_resume(out: Path, cfg: DPOConfig, checkpoint: Path | None, state: CheckpointState) -> int:
    """The step to resume from, after the same check `witune train --resume` makes: settings (except where and
    how the run is executed, and its length) and the pairs themselves must be those of the checkpoint's run."""
    old = runfolder.previous_config(out, DPOConfig)
    if checkpoint is None:
        runfolder.check_resume(out, old, cfg)
        return 0
    saved = checkpoint / WITUNE_STATE
    ours = CheckpointState.from_json(json.loads(saved.read_text()) if saved.is_file() else {})
    runfolder.check_resume(checkpoint, ours.config or old, cfg, ours, state.data_sha256, state.rows)
    step = json.loads((checkpoint / "trainer_state.json").read_text()).get("global_step")
    if not isinstance(step, int):
        raise ConfigError(f"cannot resume from {checkpoint}: its trainer_state.json is not a DPO checkpoint's")
    return step


def _save_final(trainer: Any, tok: Any, cfg: DPOConfig, out: Path) -> Path:
    """`out/model`: a plain HF folder (merged LoRA unless merge_lora is false), written then renamed."""
    final = out / "model"
    model = trainer.accelerator.unwrap_model(trainer.model)
    if cfg.lora_r > 0 and cfg.merge_lora:
        model = model.merge_and_unload()
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if cfg.lora_r > 0 and not cfg.merge_lora:
            (tmp / "README_witune.md").write_text(
                "This folder holds a LoRA adapter (peft) trained with DPO on top "
                f"of {cfg.model!r}; load it with peft.AutoPeftModelForCausalLM.\n"
            )
    return final
