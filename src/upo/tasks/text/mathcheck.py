"""Are two math answers the same? math-verify (symbolic) when installed, else a plain fallback."""

from __future__ import annotations

import re
import sys
import threading

from .extract import parse_number

_warned = False


def normalise(answer: str) -> str:
    """String form for the fallback: no spaces, \\left/\\right, \\dfrac, text wrappers, degrees."""
    s = answer.strip().rstrip(".")
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac")):
        s = s.replace(old, new)
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("$", "")
    return re.sub(r"\s+", "", s)


def fallback_equal(gold: str, pred: str) -> bool:
    a, b = parse_number(gold), parse_number(pred)
    if a is not None and b is not None:
        return a == b
    return normalise(gold) == normalise(pred)


def math_equal(gold: str, pred: str | None) -> bool:
    """Equivalence of a reference answer and a predicted one (both without \\boxed)."""
    global _warned
    if pred is None or not pred.strip():
        return False
    try:
        from math_verify import parse, verify
    except ImportError:
        if not _warned:
            print(
                "upo: math-verify is not installed; MATH answers are compared as normalised "
                "strings and numbers (pip install 'upo[hf]' for symbolic equivalence)",
                file=sys.stderr,
            )
            _warned = True
        return fallback_equal(gold, pred)
    # math-verify's timeouts use signals, which only work on the main thread.
    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None
    try:
        g = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout)
        p = parse(f"\\boxed{{{pred}}}", parsing_timeout=timeout)
        if not g or not p:
            return fallback_equal(gold, pred)
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:  # a malformed answer is a wrong answer, never a crash
        return fallback_equal(gold, pred)
