"""The results table's columns: the one owner of the schema that the sweep writes and the analysis reads.

At the bottom of the layers because both sides use it and neither may import the other's way (the sweep sits
below the analysis). One row per run x benchmark x metric::

    run_id, model, dataset, prompt_weight, response_weight, normalization, seed,
    benchmark, metric, score, higher_is_better
    [rg, weight_distance, memorization_bleu, generation_length, ... per-run columns]
"""

from __future__ import annotations

# What identifies a run (its design): one value per run, repeated on each of its rows.
DESIGN_COLUMNS = ["run_id", "model", "dataset", "prompt_weight", "response_weight", "normalization", "seed"]
# Every results table has these; a CSV without one is refused.
REQUIRED = [*DESIGN_COLUMNS, "benchmark", "metric", "score", "higher_is_better"]

# Where per-run diagnostics come from: (task prefix, metric) of an evaluation row -> the results column the
# analysis reads them as (not as benchmark scores, so they never enter an aggregate).
DIAGNOSTIC_COLUMNS = {
    ("weight_distance", "l2"): "weight_distance",
    ("witune:memorization", "bleu"): "memorization_bleu",
    ("witune:generation_length", "mean_tokens"): "generation_length",
    ("witune:robustness", "clean_acc"): "robustness_clean_acc",
    ("witune:robustness", "drop"): "robustness_drop",
    ("witune:robustness", "worst_acc"): "robustness_worst_acc",
    ("dpo_pairs", "reward_margin"): "dpo_reward_margin",
}
# Per-run properties of the training data, also columns: Rg (ratio of means, tokenizer of the model trained).
DATA_COLUMNS = {("witune:data_rg", "ratio_of_means"): "rg"}
RUN_COLUMNS = {**DIAGNOSTIC_COLUMNS, **DATA_COLUMNS}

# The PLW paper's per-run training-dynamics diagnostics (section 5.3) measured by an evaluation, and with the
# loss stability (mean RSD, computed by the analysis from the loss table) the list the analysis plots.
PER_RUN_DIAGNOSTICS = ["weight_distance", "memorization_bleu", "generation_length"]
DIAGNOSTICS = ["mean_rsd", *PER_RUN_DIAGNOSTICS]

# Optional columns of lm-eval's group structure (stored by the sweep when it runs lm-eval; a CSV may carry them):
# the task's parent group (lm-eval's `group_subtasks`), the items it was scored on, and for a group row whether
# lm-eval weights its subtasks by size. `witune.analysis.groups` reads them.
STRUCTURE_COLUMNS = ["parent", "n_items", "weight_by_size"]
# Per-run number columns (a CSV's text is converted to finite numbers or empty).
NUMERIC_COLUMNS = sorted({*RUN_COLUMNS.values()})
# Per-item scores (optional, for the noise guard's pairing over test items).
ITEM_COLUMNS = ["run_id", "benchmark", "metric", "item", "score"]
