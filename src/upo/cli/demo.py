"""`upo demo`: every hand rule, the shipped learned policy and a parallel rule (with --search,
the lookahead search too) on fresh puzzles, with a report and figures."""

from __future__ import annotations

from ..errors import UpoError
from ..seeds import FULL_SEED_LIMIT, check_seed


def cmd_demo(args) -> int:
    from ..demo import run_demo
    from ..io_utils import check_dir_target

    if args.n < 1 or args.threads < 1:
        raise UpoError(f"--n and --threads must be at least 1, got {args.n} and {args.threads}")
    check_seed(args.seed, "--seed", FULL_SEED_LIMIT)
    check_dir_target(args.out, "--out")

    return run_demo(
        out=args.out,
        n=args.n,
        seed=args.seed,
        threads=args.threads,
        dtype=args.dtype,
        search=args.search,
    )


def register(sub) -> None:
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
    d.add_argument(
        "--search",
        action="store_true",
        help="also run the lookahead search (about 4 greedy decodes' time: off by default so the "
        "demo stays within 10 minutes on CPUs without native bf16)",
    )
    d.set_defaults(func=cmd_demo)
