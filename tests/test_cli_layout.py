"""The `upo` command as a package: its entry points, and `upo eval` taking every flag of the
former `python -m upo.text_decode` (text tasks on a Hugging Face MDM)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from upo.cli import build_parser, main, run_guarded
from upo.cli.common import Parser, command_line

ROOT = Path(__file__).resolve().parents[1]


def test_entry_points():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"upo": "upo.cli:main"} and callable(main)
    # `python -m upo.cli`, as accelerate launch -m and torchrun -m start it
    done = subprocess.run(
        [sys.executable, "-m", "upo.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for group in ("mdm", "demo", "data", "eval", "policy"):
        assert group in done.stdout


def test_shared_helpers(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["upo", "eval", "--task", "a b"])
    assert command_line() == "upo eval --task 'a b'"
    assert isinstance(build_parser(), Parser)

    def failing(args):
        from upo.errors import UpoError

        raise UpoError(f"bad {args}")

    assert run_guarded(failing, 1) == 2
    assert capsys.readouterr().err == "upo: error: bad 1\n"


def test_eval_takes_every_text_decode_flag():
    argv = [
        "eval", "--task", "gsm8k", "--mdm", "hf:some/model", "--data", "d.jsonl",
        "--policies", "confidence", "--dtype", "bfloat16", "--k", "2", "--n", "3",
        "--batch-size", "4", "--seed", "5", "--json", "out.json",
        # add_hf_arguments
        "--trust-remote-code", "--device", "cpu", "--mask-id", "7", "--gen-length", "8",
        "--block-length", "4", "--no-chat", "--instructions", "Solve.", "--show", "1",
        "--confidence", "model", "--allow-unpadded-batching",
    ]  # fmt: skip
    args = build_parser().parse_args(argv)
    assert (args.task, args.mdm, args.data, args.policies, args.dtype) == (
        "gsm8k",
        "hf:some/model",
        "d.jsonl",
        "confidence",
        "bfloat16",
    )
    assert (args.k, args.n, args.batch_size, args.seed, args.json) == (2, 3, 4, 5, "out.json")
    assert args.trust_remote_code and args.no_chat and args.allow_unpadded_batching
    assert (args.device, args.mask_id, args.gen_length, args.block_length) == ("cpu", 7, 8, 4)
    assert (args.instructions, args.show, args.confidence) == ("Solve.", 1, "model")
