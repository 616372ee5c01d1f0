"""Hostile inputs still give one line `upo: error: ...` and exit 2: endless or huge files, lines
too long for a data file, CSV fields over the csv module's limit, JSON nested past Python's
recursion limit, operands of thousands of digits, a pipe as the data file, out-of-range seeds,
and Ctrl-C before a command starts."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import upo.cli
import upo.tasks.records as records
from test_reliability import cli_env, message_lines
from upo.cli import main
from upo.errors import UpoError
from upo.tasks.text.data import read_records

ROOT = Path(__file__).resolve().parents[1]
DEEP = "[" * 50_000 + "]" * 50_000
LONG = "1" * 5_000
ADD = json.dumps({"task": "addition", "a": "1", "b": "2"})


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(capsys, *argv) -> str:
    """The one error line of a command that must fail with exit 2."""
    code, out, err = run(capsys, *argv)
    lines = message_lines(err)
    assert code == 2, err
    assert "Traceback" not in err and out == ""
    assert len(lines) == 1 and lines[0].startswith("upo: error: "), err
    return lines[0]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# -- 1. bounded reading --------------------------------------------------------------------------


def _limit_memory() -> None:
    # Before the bound, /dev/zero was read whole: let it fail fast rather than take the machine.
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))


def test_data_check_of_dev_zero_stops_at_the_first_line(tmp_path):
    command = [sys.executable, "-m", "upo.cli", "data", "check", "/dev/zero"]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
        timeout=120,
        preexec_fn=_limit_memory,
    )
    assert done.returncode == 2, done.stderr
    lines = message_lines(done.stderr)
    assert lines == [
        "upo: error: /dev/zero: line 1 is longer than 1,048,576 characters; "
        "not a data file of one item per line"
    ]


@pytest.mark.parametrize("task", [None, "addition", "zebra4"])
def test_a_line_too_long_is_named(tmp_path, capsys, task):
    path = write(tmp_path, "long.jsonl", '{"puzzle": "1"}\n\n' + "0" * (1024**2 + 1) + "\n")
    flags = ("--task", task) if task else ()
    assert "long.jsonl: line 3 is longer than 1,048,576 characters" in error_line(
        capsys, "data", "check", path, *flags
    )


def test_a_file_too_big_is_refused_before_reading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 1000)
    path = write(tmp_path, "big.txt", "1234\n" * 300)
    assert "big.txt: file is 0.0 GB, upo reads files of at most 0 GB" in error_line(
        capsys, "data", "check", path
    )


def test_a_pipe_too_big_is_refused_while_reading(capsys, monkeypatch):
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 1000)
    with piped("1234\n" * 300) as name:
        assert "more than 0 GB by line 201" in error_line(capsys, "data", "check", name)


def test_too_many_lines_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(records, "MAX_LINES", 3)
    path = write(tmp_path, "many.txt", "\n".join(["1234"] * 5))
    assert "many.txt: more than 3 lines (line 4)" in error_line(capsys, "data", "check", path)


def test_text_records_are_read_with_the_same_bounds(tmp_path):
    path = write(tmp_path, "gsm8k.jsonl", '{"question": "q", "answer": "1"}\n' + "x" * 2**21)
    with pytest.raises(UpoError) as err:
        read_records(path, "gsm8k")
    assert "gsm8k.jsonl: line 2 is longer than" in one_line(err)


def test_huge_text_records_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "MAX_FILE_BYTES", 100)
    for name in ("c.json", "c.csv", "c.jsonl"):
        path = write(tmp_path, name, '[{"target": 1, "nums": [1]}]' + " " * 200)
        with pytest.raises(UpoError) as err:
            read_records(path, "countdown")
        assert f"{name}: file is 0.0 GB" in one_line(err)


# -- 2. CSV fields over the csv module's limit ----------------------------------------------------


def test_a_huge_csv_field_is_named(tmp_path, capsys):
    path = write(tmp_path, "big.csv", "Puzzle,Solution\n" + "1" * 200_000 + ",2\n")
    line = error_line(capsys, "data", "check", path)
    assert "big.csv: line 2: unreadable CSV (field larger than field limit" in line


def test_a_huge_csv_field_in_text_records_is_named(tmp_path):
    path = write(tmp_path, "big.csv", "Puzzle,Solution\n1,2\n" + "1" * 200_000 + ",2\n")
    with pytest.raises(UpoError) as err:
        read_records(path, "sudoku4-text")
    assert "big.csv:3: unreadable CSV (field larger than field limit" in one_line(err)


# -- 3. JSON nested past the recursion limit ------------------------------------------------------


@pytest.mark.parametrize("task", [None, "sudoku4", "addition", "zebra4"])
def test_deeply_nested_json_is_named(tmp_path, capsys, task):
    path = write(tmp_path, "deep.jsonl", "\n" + DEEP + "\n")
    flags = ("--task", task) if task else ()
    assert "deep.jsonl: line 2: JSON nested too deeply" in error_line(
        capsys, "data", "check", path, *flags
    )


def test_deeply_nested_text_records_are_named(tmp_path):
    for name, where in (("deep.jsonl", "deep.jsonl:1:"), ("deep.json", "deep.json:")):
        with pytest.raises(UpoError) as err:
            read_records(write(tmp_path, name, DEEP), "gsm8k")
        assert f"{where} not valid JSON (nested too deeply)" in one_line(err)


# -- 4. addition operands of thousands of digits --------------------------------------------------


@pytest.mark.parametrize(
    "text, flags",
    [
        (f"1+2\n{LONG}+1\n", ("--task", "addition")),
        (f"{ADD}\n" + json.dumps({"task": "addition", "a": "1", "b": LONG}) + "\n", ()),
        (f"{ADD}\n" + json.dumps({"task": "addition", "a": "1", "b": "1", "answer": LONG}), ()),
    ],
    ids=["text", "jsonl", "answer"],
)
def test_a_huge_operand_is_named(tmp_path, capsys, text, flags):
    path = write(tmp_path, "add.txt", text)
    message = error_line(capsys, "data", "check", path, *flags)
    assert "add.txt: line 2: " in message and "5000 digits, this task allows at most" in message


def test_a_json_number_too_long_for_python_is_named(tmp_path, capsys):
    path = write(tmp_path, "add.jsonl", '{"task": "addition", "a": ' + LONG + ', "b": "1"}\n')
    message = error_line(capsys, "data", "check", path, "--task", "addition")
    assert "add.jsonl: line 1: JSON number with too many digits" in message


# -- 5. a pipe is read once -----------------------------------------------------------------------


class piped:
    """`text` behind a pipe, as /dev/fd/N: readable once, with no size known up front."""

    def __init__(self, text: str):
        self.text = text

    def __enter__(self) -> str:
        self.read_end, write_end = os.pipe()

        def feed():
            # BrokenPipeError: the reader stopped early, as it may on bad input
            with contextlib.suppress(BrokenPipeError), os.fdopen(write_end, "w") as f:
                f.write(self.text)

        self.writer = threading.Thread(target=feed, daemon=True)
        self.writer.start()
        return f"/dev/fd/{self.read_end}"

    def __exit__(self, *exc) -> None:
        os.close(self.read_end)  # also unblocks a writer the reader stopped early
        self.writer.join(timeout=10)


def test_data_check_reads_a_pipe_once(capsys):
    puzzles = (ROOT / "data" / "sudoku4-test.jsonl").read_text().splitlines()[:5]
    with piped("\n".join(puzzles) + "\n") as name:
        code, out, err = run(capsys, "data", "check", name)
    assert code == 0, err
    assert out.startswith(f"{name}: 5 valid puzzles") and out.rstrip().endswith("sudoku4")


def test_data_check_guesses_another_task_from_a_pipe(capsys):
    rows = [{"task": "addition", "a": str(a), "b": "7"} for a in (12, 345, 6789)]
    with piped("".join(json.dumps(r) + "\n" for r in rows)) as name:
        code, out, err = run(capsys, "data", "check", name)
    assert code == 0, err
    assert out.startswith(f"{name}: 3 valid items") and out.rstrip().endswith("addition")


# -- 6. seeds -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 2**64, 10**40])
@pytest.mark.parametrize("task", ["sudoku4", "addition"])
def test_data_make_refuses_a_seed_out_of_range(tmp_path, capsys, task, seed):
    out = tmp_path / "made.jsonl"
    args = ("data", "make", task, "--n", 2, "--seed", seed, "--out", out)
    assert "must be a whole number from 0 to 2**64 - 1" in error_line(capsys, *args)
    assert not out.exists()


def test_data_make_takes_the_largest_seed(tmp_path, capsys):
    out = tmp_path / "made.jsonl"
    code, _, err = run(
        capsys, "data", "make", "sudoku4", "--n", 2, "--seed", 2**64 - 1, "--out", out
    )
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_demo_refuses_a_seed_out_of_range(tmp_path, capsys, seed):
    out = tmp_path / "report"
    message = error_line(capsys, "demo", "--out", out, "--n", 1, "--seed", seed)
    assert f"--seed {seed}: must be a whole number from 0 to 2**64 - 1" in message
    assert not out.exists()


# -- 7. Ctrl-C before the command starts ----------------------------------------------------------


def test_ctrl_c_while_building_the_parser_is_one_line(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt  # as if Ctrl-C came while torch was being imported

    monkeypatch.setattr(upo.cli, "build_parser", interrupted)
    try:
        code, out, err = run(capsys, "data", "check", "x.jsonl")
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main() as a KeyboardInterrupt: a traceback for the user")
    assert code == 130 and out == ""
    assert err.splitlines() == [
        "upo: interrupted; resume with --resume where the command supports it"
    ]
