"""Token layout of `n1+n2+...+nK=` and its two valid answers, and the verifier.

The prompt is K numbers zero-padded to D digits. The answer region has room for the longest
*worked* answer: the K - 1 running totals, written as people write numbers (no leading zeros),
separated by commas, then END to the end of the region:

    n1 + n2 + n3 + n4 + n5 =  s2 , s3 , s4 , s5 END ...     (s_j = n1 + ... + n_j)

The *short* answer is the total alone, then END:

    n1 + n2 + n3 + n4 + n5 =  s5 END END ... END

Both are right when their last number is the total. The MDM is trained on a mixture of the two
(`short_rate` of the items short). The short one asks the MDM to add K numbers at once, the
worked one only two at a time, so the phrasing decides how often the answer is right, and the
unmasking order decides the phrasing: the worked answer's length depends on how many digits each
total has, so the MDM is sure only that the last positions are END; revealing END after END from
the right commits the item to the short form, revealing a comma to the worked one. This is the
end-of-text trap of LLaDA decoding a variable-length answer in one block, in miniature.

Tokens: digit d is token d (0..9); PLUS 10, EQUALS 11, COMMA 12, END 13, MASK 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

PLUS, EQUALS, COMMA, END, MASK = 10, 11, 12, 13, 14
VOCAB_SIZE = 15


@dataclass(frozen=True)
class SumsSpec:
    terms: int  # K numbers, 2..10 (so a total has at most D + 1 digits)
    digits: int  # D: the most digits a number may have
    short_rate: float = 0.5  # chance that a training item is answered with the total alone

    def __post_init__(self):
        if not 2 <= self.terms <= 10:
            raise ValueError(f"terms must be 2-10, got {self.terms}")
        if not 0.0 <= self.short_rate <= 1.0:
            raise ValueError(f"short_rate must be within 0-1, got {self.short_rate}")

    @property
    def name(self) -> str:
        return "sums"

    @property
    def width(self) -> int:
        """W: digits of every written total (K <= 10 numbers of D digits sum below 10^(D+1))."""
        return self.digits + 1

    @property
    def answer_start(self) -> int:
        return self.terms * (self.digits + 1)  # K numbers, K - 1 pluses and the equals sign

    @property
    def answer_length(self) -> int:
        return (self.terms - 1) * self.width + (self.terms - 2)

    @property
    def seq_len(self) -> int:
        return self.answer_start + self.answer_length

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def mask(self) -> int:
        return MASK

    @cached_property
    def answer_positions(self) -> np.ndarray:
        where = np.zeros(self.seq_len, dtype=bool)
        where[self.answer_start :] = True
        return where

    @cached_property
    def place(self) -> list[int]:
        """A position group for the MDM: the place value (0 = units) of every prompt digit, so
        that the numbers' columns start out aligned; D (plus), D + 1 (equals), and D + 2 for
        every answer position, whose place depends on the totals' lengths."""
        d = self.digits
        number = list(range(d - 1, -1, -1))
        prompt: list[int] = []
        for k in range(self.terms):
            prompt += number + [d if k < self.terms - 1 else d + 1]
        return prompt + [d + 2] * self.answer_length


def digits_of_number(value: int, width: int | None = None) -> list[int]:
    """The digits of value, zero-padded to width (None: as people write it)."""
    return [int(ch) for ch in (f"{value:0{width}d}" if width else str(value))]


def padded(spec: SumsSpec, tokens: list[int]) -> list[int]:
    return tokens + [END] * (spec.answer_length - len(tokens))


def prompt_tokens(spec: SumsSpec, numbers) -> list[int]:
    tokens: list[int] = []
    for k, n in enumerate(numbers):
        tokens += digits_of_number(int(n), spec.digits)
        tokens.append(PLUS if k < spec.terms - 1 else EQUALS)
    return tokens


def worked_answer(spec: SumsSpec, numbers) -> list[int]:
    """The running totals s2 .. sK separated by commas, then END."""
    totals = np.cumsum(np.asarray(numbers, dtype=np.int64))[1:]
    tokens: list[int] = []
    for j, s in enumerate(totals):
        tokens += digits_of_number(int(s))
        if j < len(totals) - 1:
            tokens.append(COMMA)
    return padded(spec, tokens)


def short_answer(spec: SumsSpec, numbers) -> list[int]:
    """The total alone, then END."""
    return padded(spec, digits_of_number(int(np.sum(numbers))))


def encode(spec: SumsSpec, numbers, form: str = "worked") -> np.ndarray:
    """[L] int64 tokens of one item: form 'worked', 'short' or 'masked' (answer all MASK)."""
    if len(numbers) != spec.terms:
        raise ValueError(f"expected {spec.terms} numbers, got {len(numbers)}")
    if any(not 0 <= int(n) < 10**spec.digits for n in numbers):
        raise ValueError(f"numbers must have at most {spec.digits} digits, got {list(numbers)}")
    answers = {
        "worked": lambda: worked_answer(spec, numbers),
        "short": lambda: short_answer(spec, numbers),
        "masked": lambda: [MASK] * spec.answer_length,
    }
    return np.array(prompt_tokens(spec, numbers) + answers[form](), dtype=np.int64)


def numbers_of(spec: SumsSpec, tokens: np.ndarray) -> np.ndarray:
    """[B, K] the numbers of each item's prompt."""
    tokens = np.asarray(tokens)
    d = spec.digits
    out = np.zeros((len(tokens), spec.terms), dtype=np.int64)
    for k in range(spec.terms):
        start = k * (d + 1)
        for i in range(d):
            out[:, k] = out[:, k] * 10 + tokens[:, start + i]
    return out


def parse_answer(spec: SumsSpec, answer) -> tuple[str, list[int]] | None:
    """('short' | 'worked', the numbers written) for a well-formed answer region, else None.

    Well formed: numbers written without leading zeros (at most W digits) separated by commas,
    either one or all K - 1 running totals, then only END."""
    tokens = [int(t) for t in answer]
    if END in tokens:
        cut = tokens.index(END)
        if any(t != END for t in tokens[cut:]):
            return None
        tokens = tokens[:cut]
    groups: list[list[int]] = [[]]
    for t in tokens:
        if t == COMMA:
            groups.append([])
        elif 0 <= t <= 9:
            groups[-1].append(t)
        else:
            return None
    if any(not 1 <= len(g) <= spec.width or (len(g) > 1 and g[0] == 0) for g in groups):
        return None
    numbers = [int("".join(map(str, g))) for g in groups]
    if len(numbers) == 1:
        return "short", numbers
    if len(numbers) == spec.terms - 1:
        return "worked", numbers
    return None


def answer_forms(spec: SumsSpec, outputs: np.ndarray) -> list[str]:
    """Per item: 'short', 'worked' or 'malformed' (what phrasing the decode committed to)."""
    region = np.asarray(outputs)[:, spec.answer_start :]
    return [(parse_answer(spec, row) or ("malformed",))[0] for row in region]


def solved_batch(spec: SumsSpec, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """[B] 1.0 where the answer is well formed and its last number is the total (the verifier
    recomputes the total from the prompt; intermediate totals are not graded, as a maths grader
    reads only the final answer)."""
    totals = numbers_of(spec, prompts).sum(1)
    region = np.asarray(outputs)[:, spec.answer_start :]
    out = np.zeros(len(region))
    for i, row in enumerate(region):
        parsed = parse_answer(spec, row)
        out[i] = float(parsed is not None and parsed[1][-1] == totals[i])
    return out


def final_digits_right(spec: SumsSpec, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """[B] fraction of the total's W digits written right in the answer's last number (0 for a
    malformed answer): partial credit."""
    totals = numbers_of(spec, prompts).sum(1)
    region = np.asarray(outputs)[:, spec.answer_start :]
    out = np.zeros(len(region))
    for i, row in enumerate(region):
        parsed = parse_answer(spec, row)
        if parsed is not None:
            # Digits compared from the units up, zero-padded: a total one digit short still
            # gets credit for the digits it has right.
            got = f"{parsed[1][-1]:0{spec.width}d}"
            want = f"{int(totals[i]):0{spec.width}d}"
            out[i] = sum(a == b for a, b in zip(got, want)) / spec.width
    return out


def render(spec: SumsSpec, tokens) -> str:
    """'012+345+...=0357,...' with '_' for MASK and '.' for END."""
    chars = {PLUS: "+", EQUALS: "=", COMMA: ",", END: ".", MASK: "_"}
    return "".join(chars.get(int(t), str(int(t))) for t in np.asarray(tokens).reshape(-1))
