"""Orchestration that combines stages (training, evaluation, sweep, analysis, report): it sits above all of
them, so each stage keeps importing only the stages below it."""
