"""Markdown of the published tables: the table itself and how each kind of number is written.

Every number keeps its qualifier in print: a bound (``≤8``, ``>1024``), an interval (``[30, 45]``,
0 and ∞ for beyond the sweep's ends) or what the sweep points alone say (``(16, 32]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pdetransfer.study.config import Study
from pdetransfer.study.plotting import dataset_label

MISSING = "n/a"
BOUND_SYMBOL = {"=": "", "<=": "≤", ">=": "≥", ">": ">", "<": "<"}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (text cells, first column left, others right)."""
    align = [":--"] + ["--:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def format_error(mean: float, std: float = math.nan) -> str:
    """``0.0523 ± 0.0031``: three significant digits, the spread over seeds when known."""
    if not math.isfinite(mean):
        return MISSING
    text = f"{mean:.3g}"
    return f"{text} ± {std:.2g}" if math.isfinite(std) else text


def format_n(n: float, bound: str) -> str:
    """An N of data_efficiency.csv with its qualifier: ``≤8``, ``>1024`` or ``37``."""
    if not math.isfinite(n):
        return MISSING
    return f"{BOUND_SYMBOL.get(bound, '')}{n:.0f}"


def format_ratio(ratio: float, bound: str) -> str:
    """N_scratch / N_finetune with its qualifier: ``12.3x``, ``≥4.0x``; n/a when unknown."""
    if not bound or not math.isfinite(ratio):
        return MISSING
    return f"{BOUND_SYMBOL[bound]}{ratio:.1f}x"


def format_interval(lo: float, hi: float, digits: str = ".0f") -> str:
    """`` [30, 45]``: a 95% interval (0 and ∞: beyond the sweep's ends); empty when unknown,
    or when both ends lie beyond the same end of the sweep (the bound already says so)."""
    if math.isnan(lo) or math.isnan(hi) or (lo == hi and lo in (0, math.inf)):
        return ""
    low = "0" if lo == 0 else f"{lo:{digits}}"
    high = "∞" if math.isinf(hi) else f"{hi:{digits}}"
    return f" [{low}, {high}]"


def task_label(study: Study, pretrain: str, downstream: str) -> str:
    return f"{pretrain} → {dataset_label(study, downstream)}"


def format_sweep(lo: float, hi: float, digits: str = ".0f") -> str:
    """`` (8, 32]``: what the sweep points alone say of a crossing (0 and ∞ as in
    :func:`format_interval`); empty when unknown."""
    if math.isnan(lo) or math.isnan(hi):
        return ""
    low = "0" if lo == 0 else f"{lo:{digits}}"
    high = "∞" if math.isinf(hi) else f"{hi:{digits}}"
    return f" ({low}, {high}]"
