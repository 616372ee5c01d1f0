"""Pulling the final answer out of a model's free text. Every function returns None when the
text holds no answer of the expected shape, never raises."""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def answer_tag(text: str) -> str | None:
    """The content of the last <answer>...</answer> (an unclosed final tag counts: generation may
    stop before the closing tag)."""
    found = re.findall(r"<answer>(.*?)(?:</answer>|$)", text, flags=re.S)
    return found[-1].strip() if found else None


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} or \\fbox{...}, braces balanced; None if unclosed."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    i = start = starts[-1]
    depth = 1
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None


def parse_number(text: str | None) -> Fraction | None:
    """A number written as 1,234 / $12.50 / -3 / 0.5 / 3/4 / \\frac{3}{4}, exactly; else None."""
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").replace("\\!", "").replace(" ", "")
    s = re.sub(r"\\text\{[^}]*\}", "", s).rstrip(".")
    s = s.removesuffix("%")
    frac = re.fullmatch(r"(-?)\\d?frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if frac:
        sign, num, den = frac.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    if re.fullmatch(r"-?\d+/\d+", s):
        num, den = s.split("/")
        return Fraction(int(num), int(den)) if int(den) != 0 else None
    if re.fullmatch(r"-?(\d+\.?\d*|\.\d+)", s):
        return Fraction(s)
    return None


def last_number(text: str) -> Fraction | None:
    found = _NUMBER.findall(text)
    return parse_number(found[-1]) if found else None


def gsm8k_reference(answer: str) -> Fraction | None:
    """The number after '####' in a GSM8K reference solution (or the whole field if it is one)."""
    if "####" in answer:
        return parse_number(answer.split("####")[-1])
    return parse_number(answer)


def gsm8k_prediction(text: str) -> Fraction | None:
    """The model's final number: \\boxed{}, else an <answer> tag, else '#### x', else 'answer is
    x', else the last number in the text."""
    for candidate in (last_boxed(text), answer_tag(text)):
        if candidate is not None:
            value = parse_number(candidate)
            return value if value is not None else last_number(candidate)
    if "####" in text:
        return last_number(text.split("####")[-1])
    said = re.findall(r"answer is[:\s]*([^\n]*)", text, flags=re.I)
    if said:
        value = last_number(said[-1])
        if value is not None:
            return value
    return last_number(text)


def digits(text: str, n: int) -> list[int] | None:
    """The first n digits of the text (or of its <answer> tag); None if there are fewer."""
    body = answer_tag(text)
    found = [int(c) for c in re.findall(r"[0-9]", body if body is not None else text)]
    return found[:n] if len(found) >= n else None
