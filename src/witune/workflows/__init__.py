"""Orchestration that combines stages (training, evaluation, sweep, analysis, report): it sits above all of
them, so each stage keeps importing only the stages below it.

`analysis`: read a sweep folder for the analysis and analyse it (`witune analyze`, `witune report`);
`demo`: `witune demo`, built from the same calls.
"""

from witune.workflows.analysis import analyze_results, read_dpo_stage, read_results_table, read_sweep_folder

__all__ = ["analyze_results", "read_dpo_stage", "read_results_table", "read_sweep_folder"]
