"""Text benchmarks for large MDMs: GSM8K, MATH500, Sudoku-4x4 as text, Countdown.

A text task (a `upo.tasks.base.Task`) turns records into prompts, prompts into MDM inputs (through
the MDM's tokenizer, so a task is `bind`-ed to an MDM before use) and decoded answers into
rewards. `solved` is the verifiable correctness of each answer; `partial_credit` is the paper's
partial credit where one exists (the fraction of blank Sudoku cells filled correctly) and equals
`solved` elsewhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import UpoError
from ..base import Batch
from ..sudoku.grid import SPECS, decode, solved_batch
from ..sudoku.io import check_record, load_puzzles
from ..sudoku.task import check_puzzle_file
from . import countdown
from .data import field as record_field
from .data import read_records
from .encoding import answer_text, encode_prompts
from .extract import digits, gsm8k_prediction, gsm8k_reference, last_boxed
from .mathcheck import math_equal


@dataclass
class TextTask:
    """Shared machinery; subclasses give `items` (records -> dicts with a "prompt"), and `score`
    (answer text, item -> (solved, partial credit))."""

    name: str = "text"
    gen_length: int = 256
    block_length: int | None = 32
    chat: bool = True  # wrap prompts in the tokenizer's chat template (instruct models)
    system: str | None = None
    tokenizer: object = field(default=None, repr=False)
    mask_id: int = -1
    eos_ids: list[int] = field(default_factory=list)
    # MATH500 records carry a level; the other benchmarks' items are all level 0
    difficulty_name: ClassVar[str] = "level"

    def validate(self) -> None:
        if self.gen_length < 1:
            raise UpoError(f"{self.name}: gen_length must be at least 1")
        if self.block_length is not None and (
            self.block_length < 1 or self.gen_length % self.block_length
        ):
            raise UpoError(
                f"{self.name}: block_length {self.block_length} must divide gen_length {self.gen_length}"
            )

    # -- task-specific ------------------------------------------------------------------------
    def items(self, records: list[dict], source) -> list[dict]:
        raise NotImplementedError

    def score(self, text: str, item: dict) -> tuple[bool, float]:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def bind(self, denoiser) -> TextTask:
        """This task speaking the tokenizer, mask token and EOS ids of `denoiser`."""
        tokenizer = denoiser.tokenizer
        if tokenizer is None:
            raise UpoError(f"{self.name}: text tasks need an MDM with a tokenizer (a HF model)")
        self.validate()
        return dataclasses.replace(
            self,
            tokenizer=tokenizer,
            mask_id=denoiser.mask_id,
            eos_ids=list(denoiser.eos_ids),
        )

    def _need_tokenizer(self) -> None:
        if self.tokenizer is None:
            raise UpoError(f"{self.name}: bind the task to an MDM first (task.bind(mdm))")

    def batch(self, items: list[dict]) -> Batch:
        self._need_tokenizer()
        if not items:
            raise UpoError(f"{self.name}: no items")
        tokens, attention, lengths = encode_prompts(
            self.tokenizer,
            [it["prompt"] for it in items],
            self.gen_length,
            self.mask_id,
            self.chat,
            self.system,
        )
        meta = [{**it, "prompt_tokens": n} for it, n in zip(items, lengths)]
        # No token-level reference answer exists for free text: answers are -1 everywhere.
        return Batch(tokens, np.full_like(tokens, -1), attention, meta)

    def records(self, path) -> list[dict]:
        return read_records(path, self.name)

    def load(self, path, n: int | None = None) -> Batch:
        records = self.records(path)
        items = self.items(records, path)
        if n is not None:
            items = items[:n]
        if not items:
            raise UpoError(f"{path}: no {self.name} records")
        return self.batch(items)

    def answers(self, batch: Batch, outputs: np.ndarray) -> list[str]:
        self._need_tokenizer()
        return [
            answer_text(self.tokenizer, row[-self.gen_length :], self.eos_ids) for row in outputs
        ]

    def _scores(self, batch: Batch, outputs: np.ndarray) -> list[tuple[bool, float]]:
        return [self.score(t, m) for t, m in zip(self.answers(batch, outputs), batch.meta)]

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return np.array([s for s, _ in self._scores(batch, outputs)], dtype=bool)

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray:
        return np.array([c for _, c in self._scores(batch, outputs)], dtype=np.float64)

    def difficulty(self, batch: Batch) -> np.ndarray:
        return np.array([int(m.get("level", 0) or 0) for m in batch.meta])


@dataclass
class GSM8K(TextTask):
    name: str = "gsm8k"
    gen_length: int = 256
    block_length: int | None = 32

    def items(self, records, source):
        out = []
        for i, row in enumerate(records):
            question = record_field(row, ("question", "problem"), source, i)
            ref = gsm8k_reference(str(record_field(row, ("answer", "final_answer"), source, i)))
            if ref is None:
                raise UpoError(f"{source}: record {i + 1} has no numeric final answer")
            prompt = (
                f"{question}\nSolve the problem step by step. "
                "Put the final numerical answer in \\boxed{}."
            )
            out.append({"prompt": prompt, "reference": str(ref)})
        return out

    def score(self, text, item):
        pred = gsm8k_prediction(text)
        ok = pred is not None and pred == Fraction(item["reference"])
        return ok, float(ok)


@dataclass
class MATH500(TextTask):
    name: str = "math500"
    gen_length: int = 256
    block_length: int | None = 32

    def items(self, records, source):
        out = []
        for i, row in enumerate(records):
            problem = record_field(row, ("problem", "question"), source, i)
            gold = row.get("answer")
            if gold is None:
                gold = last_boxed(str(record_field(row, ("solution",), source, i)))
            if gold is None:
                raise UpoError(f"{source}: record {i + 1} has no answer and no boxed solution")
            prompt = f"{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."
            out.append({"prompt": prompt, "reference": str(gold), "level": row.get("level", 0)})
        return out

    def score(self, text, item):
        ok = math_equal(item["reference"], last_boxed(text))
        return ok, float(ok)


def sudoku4_records(path, name: str) -> list[dict]:
    """The records of a 4x4 puzzle file for the text tasks. A local puzzle file (JSONL, CSV,
    plain text) is read by the Sudoku loader itself, the one `upo data check` runs, so both
    accept and refuse the same files with the same line numbers; puzzles with several solutions
    are kept, as these tasks score against the file's Solution. Other sources (Parquet, a JSON
    array, `hf:` datasets) are read as records and checked one by one (sudoku4_record)."""
    local = Path(str(path))
    if (
        str(path).startswith("hf:")
        or not local.is_file()
        or local.suffix.lower()
        in (
            ".parquet",
            ".json",
        )
    ):
        return read_records(path, name)
    data = load_puzzles(local, SPECS["sudoku4"], check_unique=True, allow_multiple=True)
    return [
        {"puzzle": decode(p), "solution": decode(s)} for p, s in zip(data.puzzles, data.solutions)
    ]


def sudoku4_record(row: dict, source, index: int) -> tuple[str, str]:
    """(puzzle, solution) of a 4x4 record: our JSONL's fields or the public CSV's columns,
    checked by the Sudoku loader's own rules (upo.tasks.sudoku.io.check_record): ASCII digits
    1-4 (0 or . for a blank), no repeated digit, a valid solution that keeps the givens."""
    puzzle = str(record_field(row, ("puzzle", "Puzzle", "quizzes"), source, index)).strip()
    solution = str(record_field(row, ("solution", "Solution", "solutions"), source, index)).strip()
    why = check_record(puzzle, solution, SPECS["sudoku4"])
    if why is not None:
        raise UpoError(f"{source}: record {index + 1}: {why}")
    return puzzle.replace(".", "0"), solution


class Sudoku4Records:
    """The 4x4 puzzle files of sudoku4-text and sudoku4-paper: read (records) and checked by `upo
    data check` (check_file) with the Sudoku loader, puzzles with several solutions accepted."""

    name: str

    def records(self, path):
        return sudoku4_records(path, self.name)

    def check_file(self, source, skip_invalid: bool = False, progress=None):
        return check_puzzle_file(source, SPECS["sudoku4"], skip_invalid, progress, name=self.name)


@dataclass
class Sudoku4Text(Sudoku4Records, TextTask):
    """4x4 Sudoku answered as text, answer only: the 16 digits of the solved grid. Partial
    credit is the fraction of blank cells filled correctly (the paper's cell accuracy)."""

    name: str = "sudoku4-text"
    gen_length: int = 32
    block_length: int | None = None

    def items(self, records, source):
        out = []
        for i, row in enumerate(records):
            puzzle, solution = sudoku4_record(row, source, i)
            rows = "\n".join(" ".join(puzzle[r * 4 : r * 4 + 4]) for r in range(4))
            prompt = (
                "Solve this 4x4 Sudoku: every row, column and 2x2 box must hold the digits 1 to 4 "
                f"once each. The grid row by row, 0 marks an empty cell:\n{rows}\n"
                "Answer with only the 16 digits of the solved grid, row by row, inside "
                "<answer></answer>."
            )
            out.append({"prompt": prompt, "puzzle": puzzle, "solution": solution})
        return out

    def score(self, text, item):
        puzzle = np.array([int(c) for c in item["puzzle"]])
        solution = np.array([int(c) for c in item["solution"]])
        blanks = puzzle == 0
        got = digits(text, 16)
        if got is None:
            return False, 0.0
        grid = np.array(got)
        cell = float((grid[blanks] == solution[blanks]).mean()) if blanks.any() else 1.0
        ok = bool(solved_batch(SPECS["sudoku4"], puzzle[None], grid[None])[0])
        return ok, cell


@dataclass
class Countdown(TextTask):
    name: str = "countdown"
    gen_length: int = 128
    block_length: int | None = 32

    def items(self, records, source):
        out = []
        for i, row in enumerate(records):
            nums, target = countdown.record_numbers(row, source, i)
            prompt = (
                f"Using the numbers {nums}, create an equation that equals {target}. Use +, -, * "
                "and / and each number exactly once. Put only the expression inside "
                "<answer></answer>, e.g. <answer>(1 + 2) * 3</answer>."
            )
            out.append({"prompt": prompt, "nums": nums, "target": target})
        return out

    def score(self, text, item):
        ok = countdown.check(text, item["nums"], item["target"])
        return ok, float(ok)


def default_data_path(name: str, split: str = "test") -> Path:
    return Path("data") / "text" / f"{name}-{split}.jsonl"
