"""What every task gives the rest of upo: items as MDM inputs (Batch), and the protocols tasks
satisfy (Task for every task, TokenTask for those upo's own MDM is trained on)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from .records import distinct, require_file

if TYPE_CHECKING:
    from ..models.denoiser import Denoiser


def positions_from(seq_len: int, start: int) -> np.ndarray:
    """[seq_len] bool, True from `start` on: the answer positions of a layout whose answer
    follows its prompt (addition, sums, Zebra)."""
    where = np.zeros(seq_len, dtype=bool)
    where[start:] = True
    return where


@dataclass
class Batch:
    """Items of one task as MDM inputs. tokens [B, L] with mask_id at the positions to fill,
    answers [B, L] the reference answer, attention_mask [B, L] (False = padding)."""

    tokens: np.ndarray
    answers: np.ndarray
    attention_mask: np.ndarray
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens)

    def trimmed(self) -> Batch:
        """This batch without the leading columns that are padding in every row: a batch is
        padded to its own longest item, not to its data set's."""
        used = self.attention_mask.any(axis=0)
        lead = int(used.argmax()) if used.any() else 0
        if lead == 0:
            return self
        cut = slice(lead, None)
        return Batch(
            self.tokens[:, cut], self.answers[:, cut], self.attention_mask[:, cut], self.meta
        )

    def select(self, idx) -> Batch:
        idx = np.asarray(idx)
        return Batch(
            self.tokens[idx],
            self.answers[idx],
            self.attention_mask[idx],
            [self.meta[i] for i in idx] if self.meta else [],
        )


@runtime_checkable
class Task(Protocol):
    """What every task gives the rest of upo: evaluation, GRPO and pre-training see only this.

    A task turns a data file into a Batch for an MDM and scores the MDM's outputs. Scores speak
    of items and partial credit, not cells and puzzles: `solved` is whether an item's output is
    fully correct (a valid completion, a right final answer), `partial_credit` the task's
    finer-grained score in [0, 1] (Sudoku: the fraction of blanks equal to the solution; tasks
    without one give `solved` again). `upo eval --json` records its mean as `cell_acc`.

    - name: the registered name (`upo eval --task NAME`).
    - difficulty_name: what `difficulty` counts, the word results are broken down by: "blanks",
      "clues", "digits", "level".
    - block_length: the semi-autoregressive block size decoding uses (the positions of one block
      are revealed before the next opens); None: one block, any masked position at any step.
    - bind(denoiser): this task speaking that MDM. Text tasks take its tokenizer, mask id and EOS
      ids and must be bound before `load`; token tasks (upo's own MDMs) return themselves.
    - load(path): the items of a data file as a Batch; every failure is one UpoError line naming
      the file. Tasks add keywords of their own (token tasks: skip_invalid; text tasks: n).
    - solved(batch, outputs) -> bool [N]; partial_credit(batch, outputs) -> float [N], for
      outputs [N, L] decoded from batch.tokens.
    - difficulty(batch) -> int [N].
    """

    name: str
    difficulty_name: str
    block_length: int | None

    def bind(self, denoiser: Denoiser) -> Task: ...

    def load(self, path: str | Path) -> Batch: ...

    def solved(self, batch: Batch, outputs: np.ndarray) -> np.ndarray: ...

    def partial_credit(self, batch: Batch, outputs: np.ndarray) -> np.ndarray: ...

    def difficulty(self, batch: Batch) -> np.ndarray: ...


class ItemStream(Protocol):
    """An endless stream of complete items (answers filled in) for MDM training: batch(index,
    size) -> int64 [size, seq_len], the same for the same stream seed and index, so a resumed run
    sees the batches it would have seen."""

    def batch(self, index: int, size: int) -> np.ndarray: ...


@runtime_checkable
class TokenTask(Task, Protocol):
    """A task upo's own MDM is trained and evaluated on (Sudoku, addition, Zebra): a fixed-length
    token layout with its own vocabulary, a generator of items with unique answers and an infinite
    training stream. What `upo mdm train`, `upo data make|check` and `upo eval` read:

    - seq_len, vocab_size, mask_id: the layout, which the MDM must match;
    - answer_positions: bool [seq_len], the positions an item may have masked (the MDM is trained
      to fill only these: all of a Sudoku grid, only the sum of an addition);
    - grid_side: the side of the square grid the tokens are (Sudoku), for the fill-order figures
      and text; None when they are a sequence;
    - model_defaults(): the built-in MDM's layout settings (vocabulary, mask id, length and the
      task's position structure);
    - stream(seed): the training stream of complete items (an ItemStream);
    - default_difficulty, max_difficulty: `upo data make`'s default range and its upper bound;
    - generate(n, difficulty, seed, exclude, progress, max_attempts): n distinct items with
      difficulty in the inclusive range, none whose key is in `exclude`;
    - keys(batch): what makes two items the same (train and test files are kept disjoint by it);
    - check(path, skip_invalid, progress): (valid items, messages of the bad lines skipped), every
      answer verified; `upo data check`;
    - write(path, batch): the items as JSONL that `load` reads back; describe(batch): a short
      summary of their difficulties.
    """

    seq_len: int
    vocab_size: int
    mask_id: int
    answer_positions: np.ndarray
    grid_side: int | None
    default_difficulty: tuple[int, int]
    max_difficulty: int

    def model_defaults(self) -> dict: ...

    def stream(self, seed: int) -> ItemStream: ...

    def generate(
        self,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude: set[str] = ...,
        progress: Callable[[int], object] | None = None,
        max_attempts: int | None = ...,
    ) -> Batch: ...

    def keys(self, batch: Batch) -> list[str]: ...

    def check(
        self, path, skip_invalid: bool = False, progress: Callable[[int], object] | None = None
    ) -> tuple[Batch, list[str]]: ...

    def write(self, path: str | Path, batch: Batch) -> None: ...

    def describe(self, batch: Batch) -> str: ...


@dataclass
class FileCheck:
    """What `upo data check` says of a file: `count` valid items (called `noun`s) of task `name`,
    `description` their difficulties, `errors` the bad lines skipped (with skip_invalid) and
    `note` anything the task adds (text Sudoku: puzzles with several solutions)."""

    name: str
    noun: str
    count: int
    description: str
    errors: list[str]
    note: str = ""


class SpecTask:
    """Shared forwarding of the token tasks whose layout is a spec dataclass (SudokuSpec,
    AdditionSpec, ZebraSpec): every spec names its layout the same way (name, seq_len,
    vocab_size, mask, answer_positions), so a task only adds what differs (scoring, items,
    files). Subclasses are dataclasses with a `spec` field and a `check` of their own."""

    spec: Any
    difficulty_name: ClassVar[str]
    block_length: ClassVar[int | None] = None  # any answer position may be revealed at any step
    grid_side: ClassVar[int | None] = None  # a sequence, not a square grid
    noun: ClassVar[str] = "item"  # what `upo data make|check` call one item
    # Whether a bad line in an --exclude file of `upo data make` is skipped (else an error).
    exclude_skips_invalid: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seq_len(self) -> int:
        return self.spec.seq_len

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def mask_id(self) -> int:
        return self.spec.mask

    @property
    def answer_positions(self) -> np.ndarray:
        return self.spec.answer_positions

    def model_defaults(self) -> dict:
        """The built-in MDM's layout settings: the vocabulary, mask id and length every spec
        names the same way, then the task's own position structure (`structure_defaults`)."""
        layout = {"vocab_size": self.vocab_size, "mask_id": self.mask_id, "seq_len": self.seq_len}
        return {**layout, **self.structure_defaults()}

    def structure_defaults(self) -> dict:
        """TinyConfig fields that give the MDM the task's structure (position groups, a grid's
        boxes, ...); none by default."""
        return {}

    def bind(self, denoiser) -> SpecTask:
        return self  # the same tokens for every MDM of this layout

    def load(self, path, skip_invalid: bool = False) -> Batch:
        """The file's items, every answer verified; bad lines are a UpoError naming the line, or
        with `skip_invalid` are skipped and counted on stderr."""
        require_file(path)
        batch, errors = self.check(path, skip_invalid)
        if errors:
            print(f"{path}: skipped {len(errors)} invalid lines", file=sys.stderr)
        return batch

    def check_file(self, source, skip_invalid: bool = False, progress=None) -> FileCheck:
        batch, errors = self.check(source, skip_invalid=skip_invalid, progress=progress)
        return FileCheck(self.name, self.noun, len(batch), self.describe(batch), errors)

    def draw_distinct(
        self,
        draw,
        n: int,
        difficulty: tuple[int, int],
        seed: int,
        exclude,
        progress,
        max_attempts: int,
        noun: str,
    ) -> list:
        """n distinct items from `draw(rng) -> (key, item)` (keys not in `exclude`), after checking
        that `difficulty` is a range within 1..max_difficulty; `noun` names the items in the
        message when too few distinct ones exist (addition, sums)."""
        lo, hi = difficulty
        if not 1 <= lo <= hi <= self.max_difficulty:
            raise ValueError(f"{self.difficulty_name} {lo}-{hi} outside 1-{self.max_difficulty}")
        rng = np.random.default_rng(seed)
        what = f"{noun} with {lo}-{hi} {self.difficulty_name}"
        return list(distinct(lambda: draw(rng), n, exclude, max_attempts, what, progress))

    def describe(self, batch: Batch) -> str:
        n = self.difficulty(batch)
        return f"{self.difficulty_name} {n.min()}-{n.max()}, mean {n.mean():.1f}"
