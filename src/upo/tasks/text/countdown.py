"""Countdown: reach the target with + - * / and parentheses using the given numbers once each.

The expression is parsed by a small recursive-descent parser over exact fractions: nothing is
ever passed to eval(), so a model's output cannot run code.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from ...errors import UpoError
from .data import field
from .extract import answer_tag

_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")
MAX_LENGTH = 200  # longer "expressions" are not answers


class BadExpression(ValueError):
    pass


def tokenize(expr: str) -> list[str]:
    tokens, pos = [], 0
    expr = expr.replace("×", "*").replace("÷", "/").replace("x", "*").strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise BadExpression(f"unexpected {expr[pos : pos + 10]!r}")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return tokens


def evaluate(expr: str) -> tuple[Fraction, list[int]]:
    """(exact value, numbers used) of an arithmetic expression; BadExpression if malformed."""
    if len(expr) > MAX_LENGTH:
        raise BadExpression("too long")
    tokens = tokenize(expr)
    used: list[int] = []
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def atom() -> Fraction:
        t = peek()
        if t is None:
            raise BadExpression("ends too early")
        if t == "(":
            take()
            value = sum_()
            if peek() != ")":
                raise BadExpression("unbalanced parentheses")
            take()
            return value
        if t == "-":
            take()
            return -atom()
        if t.isdigit():
            take()
            used.append(int(t))
            return Fraction(int(t))
        raise BadExpression(f"unexpected {t!r}")

    def product() -> Fraction:
        value = atom()
        while peek() in ("*", "/"):
            op = take()
            rhs = atom()
            if op == "/" and rhs == 0:
                raise BadExpression("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def sum_() -> Fraction:
        value = product()
        while peek() in ("+", "-"):
            op = take()
            rhs = product()
            value = value + rhs if op == "+" else value - rhs
        return value

    value = sum_()
    if pos != len(tokens):
        raise BadExpression(f"unexpected {tokens[pos]!r}")
    return value, used


def extract_expression(text: str) -> str | None:
    """The proposed expression: the <answer> tag, else the last line with arithmetic in it; an
    '= target' tail is dropped."""
    body = answer_tag(text)
    if body is None:
        lines = [ln for ln in text.strip().splitlines() if re.search(r"\d\s*[-+*/]", ln)]
        if not lines:
            return None
        body = lines[-1]
    body = body.split("=")[0].strip()
    return body or None


def check(text: str, numbers: list[int], target: int) -> bool:
    """True if the answer uses exactly the given numbers (each once) and equals the target."""
    expr = extract_expression(text)
    if expr is None:
        return False
    try:
        value, used = evaluate(expr)
    except BadExpression:
        return False
    return Counter(used) == Counter(numbers) and value == target


def record_numbers(row: dict, source, index: int) -> tuple[list[int], int]:
    """(numbers, target) of one data record. Two layouts: `nums` (or `numbers`) and `target`, as
    in Jiayi-Pan/Countdown-Tasks-3to4; or the UPO paper's files, `input` the numbers as one
    comma-separated string ("30,100,93") and `output` the target ("23")."""
    if any(row.get(name) is not None for name in ("nums", "numbers", "target")):
        nums = field(row, ("nums", "numbers"), source, index)
        target = field(row, ("target",), source, index)
    else:
        nums = field(row, ("input",), source, index)
        target = field(row, ("output",), source, index)
        if isinstance(nums, str):
            nums = [x for x in nums.split(",") if x.strip()]
    try:
        return [int(x) for x in nums], int(target)
    except (TypeError, ValueError):
        raise UpoError(
            f"{source}: record {index + 1}: the numbers and the target must be integers"
        ) from None
