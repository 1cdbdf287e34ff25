"""Compatibility re-export: the error types live in `witune.errors` (the bottom layer)."""

from witune.errors import ERROR_KINDS, ConfigError, DataError, ErrorKind, Location

__all__ = ["ERROR_KINDS", "ConfigError", "DataError", "ErrorKind", "Location"]
