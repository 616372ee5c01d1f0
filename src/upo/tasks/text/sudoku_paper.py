"""4x4 Sudoku exactly as the UPO paper's code poses it to LLaDA (task `sudoku4-paper`).

The paper's protocol (github chunsanHong/UPO, data_utils.py and upo_trainer.py), restated:
- one user turn through the chat template: an instruction block, then "Solve the following
  Sudoku puzzle:" and the grid as four lines of four characters, a space for each blank;
- after the assistant header, a FIXED answer template: "\\n<answer>\\n" + the four rows +
  "</answer>" + end-of-turn, where each row holds the given digits as text and one mask token at
  each blank, and nowhere else: the model writes only the blanks;
- one blank revealed per step (as many steps as blanks), no semi-autoregressive blocks, the
  token the MDM's argmax;
- reward and metric: the fraction of blanks equal to the given Solution (digits read from the
  <answer> span in row order, padded or cut to 16), averaged over puzzles.

upo also reports the valid-completion rate (`solved`): some puzzles of the paper's test file have
several solutions, and a valid completion that differs from the given Solution scores below 1 in
cell accuracy (`upo data check FILE --task sudoku4-paper` counts them).

`sudoku4-paper-eval` is the same task under the protocol of the authors' evaluation script
(`protocol: paper-script`; eval/eval.py and eval/sudoku.py of their code, restated):
- 256 of the file's puzzles, the indices numpy's legacy generator draws after seed 42:
  np.random.seed(42); np.random.choice(N, 256, replace=False) (N = 500 for their test file), in
  that order;
- the instruction and the answer template passed together as ONE user message whose content is
  the Python tuple (instruction, template): the chat template renders it as str() of the tuple,
  so the template's newlines appear as the two characters backslash and n, and its mask tokens sit
  inside the user turn; nothing follows the assistant header. Tokenized with the tokenizer's
  default special tokens;
- batches of `script_batch` consecutive puzzles, left-padded with the pad token to the batch's
  longest and run WITHOUT an attention mask (the padding is attended as ordinary tokens). The
  script's --batch_size defaults to 4, but the run scripts shipped beside it
  (eval/run_eval_sudoku_*.slurm) pass --batch_size 1 on 4 processes, so `script_batch` defaults
  to 1 (no padding at all); 4 reproduces the script's default. `upo eval --batch-size` must equal
  `script_batch` so that upo's batches are the script's;
- each row decoded whole with special tokens kept; the answer is the last <answer>...</answer>
  span after removing newlines, its characters that str.isdigit() accepts, padded with '0' or cut
  to 16; cell accuracy over the blanks (0 without an answer or without blanks).

`sudoku4-text` is the free-form, d1-style variant: the model writes the whole answer itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...errors import UpoError
from ..base import Batch
from ..sudoku.grid import SPECS, solved_batch
from .encoding import chat_text, pad_id, uses_chat
from .task import Sudoku4Records, TextTask, sudoku4_record

# The paper's instruction block, word for word (its typos "raw" and "Firth" included), since the
# frozen model's answers depend on the exact prompt.
PAPER_INSTRUCTIONS = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where ' ' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid. Never leave it as ' '.

Respond in this exact format:
<answer>
[First raw of 4-character solution]
[Second raw of 4-character solution]
[Third raw of 4-character solution]
[Firth raw of 4-character solution]
</answer>
"""
END_OF_TURN = "<|eot_id|>"
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def grid_lines(puzzle: str, blank: str) -> str:
    """ "\\nr1\\nr2\\nr3\\nr4\\n" with `blank` for each 0."""
    rows = [puzzle[i : i + 4].replace("0", blank) for i in range(0, 16, 4)]
    return "\n" + "\n".join(rows) + "\n"


def user_prompt(puzzle: str, instructions: str = PAPER_INSTRUCTIONS) -> str:
    return f"{instructions}\n\nSolve the following Sudoku puzzle: {grid_lines(puzzle, ' ')}\n"


def answer_template(puzzle: str, mask_token: str, end_of_turn: str) -> str:
    return f"\n<answer>{grid_lines(puzzle, mask_token)}</answer>{end_of_turn}"


SPACE_RULES = ("drop", "zero")
PROTOCOLS = ("train", "paper-script")
SCRIPT_SEED = 42  # the evaluation script's init_seed(42), which seeds numpy's global generator
SCRIPT_SAMPLE = 256  # its num_evals for sudoku


def script_sample(n_records: int) -> np.ndarray:
    """The indices of the puzzles the evaluation script scores: what np.random.choice(n, 256,
    replace=False) returns right after np.random.seed(42). A RandomState seeded 42 is that same
    generator (numpy's legacy global one), so numpy's global state is left untouched."""
    if n_records < SCRIPT_SAMPLE:
        raise UpoError(
            f"the paper's evaluation samples {SCRIPT_SAMPLE} puzzles; the file has {n_records}"
        )
    return np.random.RandomState(SCRIPT_SEED).choice(n_records, SCRIPT_SAMPLE, replace=False)


def script_message(instruction: str, template: str) -> str:
    """The user message of the evaluation script: the pair (instruction, template) as the chat
    template renders a Python tuple, i.e. str() of the tuple (repr of each string)."""
    return str((instruction, template))


def script_answer(text: str) -> str | None:
    """The script's reading of a decoded row: newlines removed, the last <answer>...</answer>
    span, stripped, its characters for which str.isdigit() holds; None without a span."""
    found = ANSWER.findall(text.replace("\n", ""))
    if not found:
        return None
    return "".join(c for c in found[-1].strip() if c.isdigit())


def script_cell_accuracy(answer: str | None, solution: str, puzzle: str) -> float:
    """The script's score: the answer padded with '0' or cut to 16, the fraction of the puzzle's
    blanks where it equals the solution; 0 for no answer, an empty one or no blanks."""
    if not answer:
        return 0.0
    answer = (answer + "0" * 16)[:16]
    blanks = [i for i, c in enumerate(puzzle) if c == "0"]
    if not blanks:
        return 0.0
    return sum(answer[i] == solution[i] for i in blanks) / len(blanks)


def answer_digits(text: str, spaces: str = "drop") -> str:
    """The paper's reading of an answer: the digits inside the last <answer>...</answer>, padded
    with 0 or cut to 16. `spaces`: "drop" (upo's) keeps digits only, so a blank the model filled
    with a space shifts every later digit one cell left; "zero" (the authors' training code)
    first removes newlines and reads every space as the digit 0, a wrong cell that keeps the
    later digits in place."""
    if spaces == "zero":
        text = text.replace("\n", "").replace(" ", "0")
    found = ANSWER.findall(text)
    if not found:
        return "0" * 16
    # ASCII digits only: str.isdigit() also takes '²' or '٣', which int() then refuses.
    digits = "".join(c for c in found[-1].strip() if c in "0123456789")
    return (digits + "0" * 16)[:16]


def blank_accuracy(digits: str, puzzle: str, solution: str) -> float:
    blanks = [i for i, c in enumerate(puzzle) if c == "0"]
    if not blanks:
        return 0.0  # as the paper's reward: a puzzle with no blanks scores 0
    return sum(digits[i] == solution[i] for i in blanks) / len(blanks)


@dataclass
class Sudoku4Paper(Sudoku4Records, TextTask):
    """The paper's 4x4 protocol: its prompt, its fixed answer template, masks only at blanks."""

    name: str = "sudoku4-paper"
    gen_length: int = 16  # not used: the answer positions are the blanks of the template
    block_length: int | None = None  # one block: any blank may be revealed at any step
    chat: bool = True
    # The instruction block before the puzzle; None: the paper's, word for word. Only for
    # models trained here (the CPU toy pipeline trains on a one-line instruction).
    instructions: str | None = None
    # How the reward reads a space inside the answer: "drop" (upo's: digits only) or "zero" (the
    # authors' code: a space is the digit 0, so later digits keep their cells). See answer_digits.
    spaces: str = "drop"
    # "train": upo's protocol, the training format (above). "paper-script": the authors'
    # evaluation script (see the module docstring); the task sudoku4-paper-eval sets it.
    protocol: str = "train"
    # paper-script: the script's --batch_size (1 in its shipped run scripts, 4 its default)
    script_batch: int = 1

    def validate(self) -> None:
        super().validate()
        if self.spaces not in SPACE_RULES:
            raise UpoError(
                f"{self.name}: spaces must be one of {', '.join(SPACE_RULES)}, got {self.spaces!r}"
            )
        if self.protocol not in PROTOCOLS:
            raise UpoError(
                f"{self.name}: protocol must be one of {', '.join(PROTOCOLS)}, got "
                f"{self.protocol!r:.40}"
            )
        if self.protocol == "paper-script":
            if self.spaces != "drop":
                # the script reads digits only; a second reading would be silently ignored
                raise UpoError(
                    f"{self.name}: the paper-script protocol reads digits only (spaces: drop)"
                )
            if not isinstance(self.script_batch, int) or self.script_batch < 1:
                raise UpoError(f"{self.name}: script_batch must be at least 1")
            if not self.chat:
                # the script always writes its message through the chat template
                raise UpoError(f"{self.name}: the paper-script protocol takes the chat template")

    def items(self, records, source):
        out = []
        for i, row in enumerate(records):
            puzzle, solution = sudoku4_record(row, source, i)
            prompt = user_prompt(
                puzzle, PAPER_INSTRUCTIONS if self.instructions is None else self.instructions
            )
            out.append({"prompt": prompt, "puzzle": puzzle, "solution": solution})
        if self.protocol == "paper-script":
            try:
                chosen = script_sample(len(out))
            except UpoError as err:
                raise UpoError(f"{source}: {err}") from None
            out = [{**out[i], "index": int(i)} for i in chosen]
        return out

    def _template_tokens(self) -> tuple[str, str]:
        mask = getattr(self.tokenizer, "mask_token", None)
        if not isinstance(mask, str) or self.tokenizer.convert_tokens_to_ids(mask) != self.mask_id:
            raise UpoError(
                f"{self.name}: the tokenizer has no mask token with id {self.mask_id}; the "
                "paper's answer template writes it at every blank"
            )
        vocab = self.tokenizer.get_vocab()
        eot = END_OF_TURN if END_OF_TURN in vocab else self.tokenizer.eos_token
        return mask, eot or ""

    def batch(self, items: list[dict]) -> Batch:
        """Chat-templated prompt + the answer template, left-padded; mask tokens only at blanks.
        meta["answer_tokens"]: the template's length, the span `answers` decodes."""
        self._need_tokenizer()
        if not items:
            raise UpoError(f"{self.name}: no items")
        if self.protocol == "paper-script":
            return self._script_batch(items)
        mask, eot = self._template_tokens()
        rows, meta = [], []
        for it in items:
            ids, n_answer = self._encode(it, it["puzzle"], mask, eot)
            self._check_masks(ids, it["puzzle"])
            rows.append(ids)
            meta.append({**it, "answer_tokens": n_answer})
        return self._padded(rows, meta)

    def _check_masks(self, ids: list[int], puzzle: str) -> None:
        """A prompt must hold one mask token per blank: one more (the prompt's own text
        tokenized to the mask token) would be filled as if it were a cell."""
        n_masks = sum(t == self.mask_id for t in ids)
        if n_masks != puzzle.count("0"):
            raise UpoError(
                f"{self.name}: the prompt of puzzle {puzzle} holds {n_masks} mask tokens "
                f"for {puzzle.count('0')} blanks (does the prompt contain the mask token?)"
            )

    def _encode(self, item: dict, shown: str, mask: str, eot: str) -> tuple[list[int], int]:
        """Token ids of prompt + template with `shown` in the template's cells (0 = mask), and
        the template's length in tokens."""
        prompt = self._chat_text(item["prompt"])
        template = answer_template(shown, mask, eot)
        ids = list(self.tokenizer(prompt + template, add_special_tokens=False)["input_ids"])
        return ids, len(self.tokenizer(template, add_special_tokens=False)["input_ids"])

    def filled(self, batch: Batch) -> np.ndarray:
        """[B, L] the batch's tokens with each blank's mask replaced by the token of its digit in
        the given solution: the targets of masked-diffusion training on this format. Needs a
        tokenizer that writes a digit beside a mask as one token of its own."""
        mask, eot = self._template_tokens()
        out = batch.tokens.copy()
        for row, item in enumerate(batch.meta):
            ids, _ = self._encode(item, item["solution"], mask, eot)
            masked = batch.tokens[row] == self.mask_id
            start = len(out[row]) - len(ids)
            if start < 0 or (np.asarray(ids) != batch.tokens[row, start:])[~masked[start:]].any():
                raise UpoError(
                    f"{self.name}: the tokenizer does not write each blank's digit as one token "
                    "in place of its mask; training targets cannot be aligned"
                )
            out[row, start:] = ids
        return out

    def _padded(self, rows: list[list[int]], meta: list[dict]) -> Batch:
        longest = max(len(r) for r in rows)
        tokens = np.full((len(rows), longest), pad_id(self.tokenizer), dtype=np.int64)
        attention = np.zeros((len(rows), longest), dtype=bool)
        for i, r in enumerate(rows):
            tokens[i, longest - len(r) :] = r
            attention[i, longest - len(r) :] = True
        return Batch(tokens, np.full_like(tokens, -1), attention, meta)

    def script_text(self, item: dict) -> str:
        """The text the evaluation script tokenizes for `item`: its user message (the tuple of
        instruction and answer template) through the chat template, up to the assistant's turn."""
        if not uses_chat(self.tokenizer, True):
            raise UpoError(
                f"{self.name}: the paper-script protocol needs the tokenizer's chat template"
            )
        mask, eot = self._template_tokens()
        message = script_message(item["prompt"], answer_template(item["puzzle"], mask, eot))
        return chat_text(self.tokenizer, message)

    def _script_batch(self, items: list[dict]) -> Batch:
        """The evaluation script's inputs: each item's tuple message through the chat template,
        tokenized with default special tokens; every `script_batch` consecutive items left-padded
        with the pad token to their own longest and all of it attended (no attention mask). The
        further padding that lines groups up in one Batch is marked unattended, so cutting a
        group out (Batch.select(...).trimmed(), as upo eval does per --batch-size) leaves exactly
        the script's batch."""
        rows = []
        for it in items:
            ids = list(self.tokenizer(self.script_text(it))["input_ids"])
            self._check_masks(ids, it["puzzle"])
            rows.append(ids)
        longest = max(len(r) for r in rows)
        pad = pad_id(self.tokenizer)
        tokens = np.full((len(rows), longest), pad, dtype=np.int64)
        attention = np.zeros((len(rows), longest), dtype=bool)
        meta = []
        for start in range(0, len(rows), self.script_batch):
            group = range(start, min(start + self.script_batch, len(rows)))
            width = max(len(rows[i]) for i in group)
            for i in group:
                tokens[i, longest - len(rows[i]) :] = rows[i]
                attention[i, longest - width :] = True  # the script's padding is attended
                meta.append({**items[i], "answer_tokens": width})  # the row as the script's
        return Batch(tokens, np.full_like(tokens, -1), attention, meta)

    def _chat_text(self, prompt: str) -> str:
        return chat_text(self.tokenizer, prompt) if uses_chat(self.tokenizer, self.chat) else prompt

    def answers(self, batch: Batch, outputs: np.ndarray) -> list[str]:
        """The answer template's text; under paper-script the whole row as the script decodes
        it (its padding included, special tokens kept)."""
        self._need_tokenizer()
        script = self.protocol == "paper-script"
        return [
            self.tokenizer.decode(row[-m["answer_tokens"] :], skip_special_tokens=not script)
            for row, m in zip(outputs, batch.meta)
        ]

    def score(self, text, item):
        if self.protocol == "paper-script":
            found = script_answer(text)
            cell = script_cell_accuracy(found, item["solution"], item["puzzle"])
            # validity needs digits 0-4 in 16 cells: other characters count as a blank
            digits = "".join(c if c in "0123456789" else "0" for c in (found or ""))
            digits = (digits + "0" * 16)[:16]
        else:
            digits = answer_digits(text, self.spaces)
            cell = blank_accuracy(digits, item["puzzle"], item["solution"])
        puzzle = np.array([int(c) for c in item["puzzle"]])
        grid = np.array([int(c) for c in digits])
        ok = bool(solved_batch(SPECS["sudoku4"], puzzle[None], grid[None])[0])
        return ok, cell


@dataclass
class Sudoku4PaperEval(Sudoku4Paper):
    """sudoku4-paper under the authors' evaluation script (protocol paper-script): for
    reproducing the paper's Table 1 numbers. Same files, same MDMs and policies."""

    name: str = "sudoku4-paper-eval"
    protocol: str = "paper-script"
