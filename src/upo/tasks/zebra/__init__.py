"""Zebra (Einstein) logic-grid puzzles: clues given, the house x attribute grid masked."""

from .spec import ZebraSpec
from .task import ZebraTask

__all__ = ["ZebraSpec", "ZebraTask"]
