"""Token layout of `n1+n2+...+nK=` and its two valid answers, and the verifier.

The prompt is K numbers zero-padded to D digits. The answer region has room for the *worked*
answer, the K - 1 running totals written W = D + 1 digits wide and separated by commas:

    n1 + n2 + n3 + n4 + n5 =  s2 , s3 , s4 , s5        (s_j = n1 + ... + n_j)

The *short* answer is the total alone, then END up to the end of the region:

    n1 + n2 + n3 + n4 + n5 =  s5 END END ... END

Both are right when their last number is the total. The MDM is trained on a mixture of the two
(`short_rate` of the items short, END-padded as LLaDA's fine-tuning pads answers) and decoded in
one block, so the unmasking order decides the phrasing: an END revealed anywhere commits the item
to the short form, a comma to the worked one. Before either is revealed the first three answer
positions hold the first running total in one phrasing and the total in the other; an order that
writes those digits while the phrasing is open can mix the two. Max-confidence does, and a learned
order that reveals an END first does not (docs/results/sums.md). Totals are zero-padded to W
digits so that their columns line up with the numbers' (the MDM's position groups); written as
people write them, a 0.67M MDM did not learn to add them in 4,000 steps (experiments/README.md,
section 6).

Tokens: digit d is token d (0..9); PLUS 10, EQUALS 11, COMMA 12, END 13, MASK 14.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..base import positions_from

PLUS, EQUALS, COMMA, END, MASK = 10, 11, 12, 13, 14
VOCAB_SIZE = 15


@dataclass(frozen=True)
class SumsSpec:
    terms: int  # K numbers, 2..10 (so a total has at most D + 1 digits)
    digits: int  # D: the most digits a number may have
    short_rate: float = 0.6  # chance that a training item is answered with the total alone

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
        return positions_from(self.seq_len, self.answer_start)

    @cached_property
    def place(self) -> list[int]:
        """Place value (0 = units) of every position as the worked answer lays it out; signs get
        W + 1 (plus), W + 2 (equals), W + 3 (comma). A position group for the MDM, so that the
        columns of the numbers and of the totals start out aligned."""
        w, d = self.width, self.digits
        number = list(range(d - 1, -1, -1))
        prompt: list[int] = []
        for k in range(self.terms):
            prompt += number + [w + 1 if k < self.terms - 1 else w + 2]
        total = list(range(w - 1, -1, -1))
        answer: list[int] = []
        for j in range(self.terms - 1):
            answer += total + ([w + 3] if j < self.terms - 2 else [])
        return prompt + answer


def digits_of_number(value: int, width: int) -> list[int]:
    return [int(ch) for ch in f"{value:0{width}d}"]


def prompt_tokens(spec: SumsSpec, numbers) -> list[int]:
    tokens: list[int] = []
    for k, n in enumerate(numbers):
        tokens += digits_of_number(int(n), spec.digits)
        tokens.append(PLUS if k < spec.terms - 1 else EQUALS)
    return tokens


def worked_answer(spec: SumsSpec, numbers) -> list[int]:
    """The running totals s2 .. sK, W digits each, separated by commas."""
    totals = np.cumsum(np.asarray(numbers, dtype=np.int64))[1:]
    tokens: list[int] = []
    for j, s in enumerate(totals):
        tokens += digits_of_number(int(s), spec.width)
        if j < len(totals) - 1:
            tokens.append(COMMA)
    return tokens


def short_answer(spec: SumsSpec, numbers) -> list[int]:
    """The total alone, then END to the end of the answer region."""
    total = digits_of_number(int(np.sum(numbers)), spec.width)
    return total + [END] * (spec.answer_length - spec.width)


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

    Well formed: W-digit numbers separated by commas, either one (then END to the end) or all
    K - 1 running totals (which fill the region); no END before a digit."""
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
    if any(len(g) != spec.width for g in groups):
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
            got = f"{parsed[1][-1]:0{spec.width}d}"
            want = f"{int(totals[i]):0{spec.width}d}"
            out[i] = sum(a == b for a, b in zip(got, want)) / spec.width
    return out


def render(spec: SumsSpec, tokens) -> str:
    """'012+345+...=0357,...' with '_' for MASK and '.' for END."""
    chars = {PLUS: "+", EQUALS: "=", COMMA: ",", END: ".", MASK: "_"}
    return "".join(chars.get(int(t), str(int(t))) for t in np.asarray(tokens).reshape(-1))
