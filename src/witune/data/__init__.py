"""Instruction data: read any format, render with exact per-token weights, collate."""

from witune.data.cache import prepare_examples
from witune.data.collate import pack, pack_bfd, packed_collate, pad_collate
from witune.data.example import Example, Message
from witune.data.formats import FORMATS, detect_format, to_examples
from witune.data.pipeline import TRUNCATIONS, TokenizedData, tokenize_examples, truncate
from witune.data.readers import LoadResult, load_examples, read_records
from witune.data.render import TEMPLATES, Rendered, Segment, alpaca_prompt, render, render_segments
from witune.data.weights import DEFAULT_SPAN_MARKERS, TOKEN_ROLES, RoleWeights
from witune.errors import ConfigError, DataError, Location

__all__ = [
    "DEFAULT_SPAN_MARKERS",
    "FORMATS",
    "TEMPLATES",
    "TOKEN_ROLES",
    "TRUNCATIONS",
    "ConfigError",
    "DataError",
    "Example",
    "LoadResult",
    "Location",
    "Message",
    "Rendered",
    "RoleWeights",
    "Segment",
    "TokenizedData",
    "alpaca_prompt",
    "detect_format",
    "load_examples",
    "pack",
    "pack_bfd",
    "packed_collate",
    "pad_collate",
    "prepare_examples",
    "read_records",
    "render",
    "render_segments",
    "to_examples",
    "tokenize_examples",
    "truncate",
]
