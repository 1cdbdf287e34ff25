"""User text in matplotlib figures.

Matplotlib reads text between two `$` as mathtext: a dataset named `cost$_$` makes `savefig` raise a parser
error, and `a$b / c$d` silently renders `b / c` in italics. Every dataset, model, benchmark, field or file
name put into a title, label or legend goes through :func:`plot_text` first.
"""

from __future__ import annotations


def plot_text(text: object) -> str:
    r"""`text` as literal matplotlib text: every `$` escaped (matplotlib draws `\$` as a plain dollar sign).

    >>> plot_text("cost$_$ / m$1")
    'cost\\$_\\$ / m\\$1'
    """
    return str(text).replace("$", r"\$")
