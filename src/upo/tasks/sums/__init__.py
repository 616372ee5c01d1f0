"""Sums of several numbers, answered either with the total alone or with the running totals: two
valid phrasings of different lengths, padded with END, decoded in one block."""

from .layout import SumsSpec
from .task import SumsTask

__all__ = ["SumsSpec", "SumsTask"]
