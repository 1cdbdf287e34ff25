"""transformers' own `Trainer.hyperparameter_search` over `prompt_weight` / `response_weight` with
`WeightedTrainer`: the Trainer alone would warn and skip both keys (they are not TrainingArguments) and train
every trial with the data's weights. Each trial must train exactly what a trainer built for its weights trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from witune.errors import ConfigError
from witune.integrations import WeightedTrainer, weighted_dataset
from witune.models import load_tokenizer

N = 8


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("hp") / "tasks.jsonl"
    rows = [{"instruction": f"Write the sum of {i} and {i + 5}.", "output": f"It is {2 * i + 5}."} for i in range(N)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _args(out: Path, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, optim="sgd",
        lr_scheduler_type="constant", warmup_steps=0, report_to="none", save_strategy="no", logging_steps=1,
        use_cpu=True, seed=3, disable_tqdm=True, **kw,
    )  # fmt: skip


def _losses(log_history: list[dict]) -> list[float]:
    return [h["loss"] for h in log_history if "loss" in h and "train_loss" not in h]


def _direct(model_dir, records, tok, out, prompt_weight: float) -> list[float]:
    from transformers import AutoModelForCausalLM

    ds = weighted_dataset(records, tok, prompt_weight, 1.0, max_length=64)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    trainer = WeightedTrainer(model=model, args=_args(out), train_dataset=ds, processing_class=tok)
    trainer.train()
    return _losses(trainer.state.log_history)


def test_optuna_search_trains_each_trial_with_its_weights(tiny_model_dir, records, tmp_path):
    pytest.importorskip("optuna")
    from transformers import AutoModelForCausalLM, TrainerCallback

    tok = load_tokenizer(tiny_model_dir)
    ds = weighted_dataset(records, tok, 1.0, 1.0, max_length=64)  # every token trainable: the trials weigh them
    seen: list[tuple[float, list[float]]] = []

    class Record(TrainerCallback):
        def on_train_end(self, args, state, control, **kw):
            seen.append((trainer.witune_role_weights[0], _losses(state.log_history)))

    trainer = WeightedTrainer(
        model_init=lambda: AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
        args=_args(tmp_path / "search"),
        train_dataset=ds,
        eval_dataset=ds,
        processing_class=tok,
        callbacks=[Record()],
    )
    best = trainer.hyperparameter_search(
        hp_space=lambda t: {"prompt_weight": t.suggest_categorical("prompt_weight", [0.0, 0.5])},
        backend="optuna",
        n_trials=2,
        direction="minimize",
        sampler=__import__("optuna").samplers.GridSampler({"prompt_weight": [0.0, 0.5]}),
    )
    assert {p for p, _ in seen} == {0.0, 0.5} and "prompt_weight" in best.hyperparameters
    for p, losses in seen:
        assert losses == pytest.approx(_direct(tiny_model_dir, records, tok, tmp_path / f"d{p}", p), rel=1e-5), p
    assert seen[0][1] != pytest.approx(seen[1][1], rel=1e-3)  # the two weightings differ: the test can fail


def test_a_searched_prompt_weight_needs_trainable_prompt_tokens(tiny_model_dir, records, tmp_path):
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(tiny_model_dir)
    masked = weighted_dataset(records, tok, 0.0, 1.0, max_length=64)  # prompt tokens have weight 0: nothing to scale
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    trainer = WeightedTrainer(model=model, args=_args(tmp_path), train_dataset=masked, processing_class=tok)
    trainer.set_role_weights(0.5, 1.0)
    with pytest.raises(ConfigError, match="no prompt token of the data has a weight"):
        trainer.train()
    with pytest.raises(ConfigError, match="not both 0"):
        trainer.set_role_weights(0.0, 0.0)
