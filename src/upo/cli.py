"""The `upo` command. Every user-facing failure is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from .errors import UpoError


def _command_line() -> str:
    return "upo " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_mdm_train(args) -> int:
    from .config import load_config
    from .training.mdm import MDMTrainConfig, train_mdm

    overrides = {"steps": args.steps, "threads": args.threads, "dtype": args.dtype}
    cfg = load_config(MDMTrainConfig, args.config, overrides)
    meta = train_mdm(cfg, args.out, resume=args.resume, command=_command_line())
    print(f"wrote {args.out}: {meta['steps']} steps, validation {meta['validation']}")
    return 0


def cmd_mdm_train_hf(args) -> int:
    from .config import load_config
    from .training.hf_mdm import HFMDMTrainConfig, train_hf_mdm

    cfg = load_config(HFMDMTrainConfig, args.config, {"steps": args.steps, "threads": args.threads})
    meta = train_hf_mdm(cfg, args.out, resume=args.resume, command=_command_line())
    print(f"wrote {meta['model']}: {meta['steps']} steps, validation {meta['validation']}")
    return 0


def cmd_demo(args) -> int:
    from .cli_data import check_seed
    from .demo import run_demo
    from .io_utils import check_dir_target

    if args.n < 1 or args.threads < 1:
        raise UpoError(f"--n and --threads must be at least 1, got {args.n} and {args.threads}")
    check_seed(args.seed)
    check_dir_target(args.out, "--out")

    return run_demo(out=args.out, n=args.n, seed=args.seed, threads=args.threads, dtype=args.dtype)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, like every other upo error."""

    def error(self, message: str):
        self.exit(2, f"upo: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="upo", description=__doc__)
    sub = parser.add_subparsers(dest="group", required=True)

    mdm = sub.add_parser("mdm", help="train the built-in masked diffusion model")
    mdm_sub = mdm.add_subparsers(dest="action", required=True)
    p = mdm_sub.add_parser("train", help="train an MDM from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--threads", type=int, help="override the config's torch threads")
    p.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float32"],
        help="override the config's dtype (auto: bfloat16 only where the CPU has native bf16)",
    )
    p.set_defaults(func=cmd_mdm_train)
    p = mdm_sub.add_parser(
        "train-hf",
        help="train a Hugging Face MDM (its own code, e.g. LLaDA's) from random weights",
        description="Train a Hugging Face MDM from a YAML config (model_code: a model directory "
        "without weights) on a text task's format; writes OUT/model, a Hugging Face directory.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="run directory (the model goes to OUT/model)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--threads", type=int, help="override the config's torch threads")
    p.set_defaults(func=cmd_mdm_train_hf)

    d = sub.add_parser(
        "demo", help="evaluate every rule and the shipped policy; write demo-report/"
    )
    d.add_argument("--out", default="demo-report")
    d.add_argument("--n", type=int, default=200)
    d.add_argument("--seed", type=int, default=2026)
    d.add_argument("--threads", type=int, default=2)
    d.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32"),  # upo.models.precision.DTYPES, without torch
        default="auto",
        help="the MDMs' dtype; auto: bfloat16 where the CPU has native bf16, else float32",
    )
    d.set_defaults(func=cmd_demo)

    from . import cli_data, cli_eval, cli_policy

    cli_data.register(sub)
    cli_eval.register(sub)
    cli_policy.register(sub)
    return parser


INTERRUPTED = "upo: interrupted; resume with --resume where the command supports it"


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C can come before run_guarded is reached: building the parser imports the command
    # modules (numpy, torch), which takes the first moments of every run.
    try:
        args = build_parser().parse_args(argv)
        return run_guarded(args.func, args)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def run_guarded(func, args) -> int:
    """func(args), with every failure turned into one line on stderr and an exit status."""
    try:
        return func(args)
    except UpoError as err:
        print(f"upo: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permission denied, ... on a path the user gave
        where = f"{err.filename}: " if err.filename else ""
        print(f"upo: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    except Exception as err:
        # A bug, not a user error: still one line, with the traceback on request.
        if os.environ.get("UPO_DEBUG"):
            raise
        what = str(err).splitlines()[0] if str(err) else ""
        print(
            f"upo: internal error: {type(err).__name__}: {what} (UPO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
