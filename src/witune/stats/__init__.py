"""Data-set statistics (Rg, per-field lengths, prompt characteristics), weight recommendation, prompt inversion
and cleaning. Sources: the PLW paper (Huerta-Enochian & Ko, "Instruction Fine-Tuning: Does Prompt Loss Matter?")
and the WIT paper (Chatterjee, Renduchintala et al., "On the Effect of Instruction Tuning Loss on Generalization",
TACL)."""

from witune.stats.clean import Cleaning, Removal, clean, is_placeholder, write_removals
from witune.stats.dataset import DatasetStats, compute_stats
from witune.stats.invert import (
    INSTRUCTION_NO_INPUT,
    INSTRUCTION_WITH_INPUT,
    Inversion,
    invert,
    invert_record,
    inverted_instruction,
)
from witune.stats.lengths import RatioStats, SampleLengths, Summary, count_tokens, ratio_stats, sample_lengths
from witune.stats.recommend import CRITICAL_PLW_SHORT, TABLE4, Recommendation, plw_curve, recommend, table4
from witune.stats.records import AlpacaRecord, read_alpaca, write_records

__all__ = [
    "CRITICAL_PLW_SHORT",
    "INSTRUCTION_NO_INPUT",
    "INSTRUCTION_WITH_INPUT",
    "TABLE4",
    "AlpacaRecord",
    "Cleaning",
    "DatasetStats",
    "Inversion",
    "RatioStats",
    "Recommendation",
    "Removal",
    "SampleLengths",
    "Summary",
    "clean",
    "compute_stats",
    "count_tokens",
    "invert",
    "invert_record",
    "inverted_instruction",
    "is_placeholder",
    "plw_curve",
    "ratio_stats",
    "read_alpaca",
    "recommend",
    "sample_lengths",
    "table4",
    "write_records",
    "write_removals",
]
