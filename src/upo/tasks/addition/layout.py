"""Token layout of `a + b = c` for the MDM, and the exact verifier.

The sequence is written the way people write a sum, most significant digit first:

    a[D-1] .. a[0]  +  b[D-1] .. b[0]  =  c[D] .. c[0]

with a and b zero-padded to D digits and the answer c to D + 1. Only the answer positions are
masked. Carries flow from c[0] (the right end) leftwards, so revealing the answer in the order it is
written (left to right), or by confidence alone, can commit to a digit before the carry that decides
it is known: the task shows whether a learned order discovers right-to-left.

Tokens: digit d is token d (0..9); PLUS 10, EQUALS 11, MASK 12.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..base import positions_from

PLUS, EQUALS, MASK = 10, 11, 12
VOCAB_SIZE = 13


@dataclass(frozen=True)
class AdditionSpec:
    digits: int  # D: the most digits an operand may have
    # Chance that a column is drawn to sum to 9, which passes an incoming carry on: long carry
    # chains, rare in random numbers, become common. 0 for plain random digits.
    carry_rate: float = 0.0

    @property
    def name(self) -> str:
        return "addition-carry" if self.carry_rate else "addition"

    @property
    def seq_len(self) -> int:
        return 3 * self.digits + 3

    # One vocabulary for every D (upo.tasks.base.SpecTask forwards these).
    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def mask(self) -> int:
        return MASK

    @property
    def answer_start(self) -> int:
        return 2 * self.digits + 2

    @cached_property
    def answer_positions(self) -> np.ndarray:
        """[L] bool: the D + 1 answer digits."""
        return positions_from(self.seq_len, self.answer_start)

    @cached_property
    def place(self) -> list[int]:
        """Place value (0 = units) of every position; PLUS and EQUALS get D + 1 and D + 2. Given
        to the MDM as a position group so that a[i], b[i] and c[i] start out aligned."""
        d = self.digits
        operand = list(range(d - 1, -1, -1))
        return operand + [d + 1] + operand + [d + 2] + list(range(d, -1, -1))


def encode(spec: AdditionSpec, a: int, b: int, with_answer: bool = True) -> np.ndarray:
    """[L] int64 tokens of a + b = (a + b), or with the answer masked."""
    d = spec.digits
    c = f"{a + b:0{d + 1}d}" if with_answer else None
    a_s, b_s = f"{a:0{d}d}", f"{b:0{d}d}"
    if len(a_s) > d or len(b_s) > d:
        raise ValueError(f"operands have at most {d} digits, got {a} and {b}")
    tokens = [int(ch) for ch in a_s] + [PLUS] + [int(ch) for ch in b_s] + [EQUALS]
    tokens += [int(ch) for ch in c] if c is not None else [MASK] * (d + 1)
    return np.array(tokens, dtype=np.int64)


def operands(spec: AdditionSpec, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """([B, D] digits of a, [B, D] digits of b), most significant first."""
    d = spec.digits
    tokens = np.asarray(tokens)
    return tokens[:, :d], tokens[:, d + 1 : 2 * d + 1]


def exact_sum(spec: AdditionSpec, tokens: np.ndarray) -> np.ndarray:
    """[B, D + 1] digits of a + b computed from the prompt by column addition with carries: the
    verifier, which trusts no stored answer."""
    a, b = operands(spec, tokens)
    out = np.zeros((len(a), spec.digits + 1), dtype=np.int64)
    carry = np.zeros(len(a), dtype=np.int64)
    for col in range(spec.digits - 1, -1, -1):  # units first: where carries come from
        s = a[:, col] + b[:, col] + carry
        out[:, col + 1] = s % 10
        carry = s // 10
    out[:, 0] = carry
    return out


def solved_batch(spec: AdditionSpec, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """[B] 1.0 where the whole answer equals a + b exactly."""
    answer = np.asarray(outputs)[:, spec.answer_start :]
    return (answer == exact_sum(spec, prompts)).all(1).astype(np.float64)


def cell_acc_batch(spec: AdditionSpec, prompts: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """[B] fraction of the D + 1 answer digits that are right (leading zeros included)."""
    answer = np.asarray(outputs)[:, spec.answer_start :]
    return (answer == exact_sum(spec, prompts)).mean(1)


def digits_of(spec: AdditionSpec, tokens: np.ndarray) -> np.ndarray:
    """[B] number of digits of the longer operand (0 counts as one digit): the difficulty."""
    a, b = operands(spec, tokens)
    nonzero = (a != 0) | (b != 0)
    first = np.where(nonzero.any(1), nonzero.argmax(1), spec.digits - 1)
    return spec.digits - first


def render(spec: AdditionSpec, tokens) -> str:
    """'a+b=c' with '_' for masked digits; leading zeros kept so columns line up."""
    chars = {PLUS: "+", EQUALS: "=", MASK: "_"}
    return "".join(chars.get(int(t), str(int(t))) for t in np.asarray(tokens).reshape(-1))
