"""Multi-digit addition: `a+b=` given, the sum masked, written most significant digit first."""

from .layout import AdditionSpec
from .task import AdditionTask

__all__ = ["AdditionSpec", "AdditionTask"]
