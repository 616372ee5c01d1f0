"""Turn a policy name into a Policy. The names live in policies/registry.py; this module is the
entry point scripts and `upo.load_policy` have always imported."""

from __future__ import annotations

from .registry import load_learned, resolve_policy

__all__ = ["load_learned", "resolve_policy"]
