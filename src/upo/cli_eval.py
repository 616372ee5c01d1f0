"""`upo eval`: compare unmasking policies on a task's held-out data."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

# The flags only text tasks on a Hugging Face MDM take (shared with python -m upo.text_decode).
HF_FLAGS = (
    "trust_remote_code",
    "device",
    "mask_id",
    "gen_length",
    "block_length",
    "no_chat",
    "instructions",
    "show",
    "confidence",
    "allow_unpadded_batching",
)

# The files `--plot DIR` writes, checked before any work like --json.
FIGURES = ("solve_rate.png", "solve_rate_by_blanks.png", "fill_order.png")


def add_hf_arguments(p) -> None:
    p.add_argument("--trust-remote-code", action="store_true", help="needed by LLaDA and Dream")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--mask-id", type=int)
    p.add_argument("--gen-length", type=int)
    p.add_argument("--block-length", type=int, help="0 = one block")
    p.add_argument("--no-chat", action="store_true", help="do not use the chat template")
    p.add_argument(
        "--instructions",
        help="sudoku4-paper: the instruction block before the puzzle (default: the paper's)",
    )
    p.add_argument("--show", type=int, default=0, help="print the first N answers per policy")
    p.add_argument(
        "--confidence",
        choices=["float32", "model"],
        help="model: confidences as LLaDA's generate() computes them (softmax in the model's "
        "dtype, torch.topk ties), to reproduce its bf16 decodes exactly (use --batch-size 1); "
        "default float32",
    )
    p.add_argument(
        "--allow-unpadded-batching",
        action="store_true",
        help="batch prompts even if the padding probe finds that padding changes the logits",
    )


def load_eval_data(task, path: str, n: int | None, skip_invalid: bool = False):
    from .errors import UpoError

    batch = task.load(path, skip_invalid=skip_invalid)
    if len(batch) == 0:
        raise UpoError(f"{path}: no puzzles to evaluate")
    if n is not None:
        if n < 1:
            raise UpoError(f"--n must be at least 1, got {n}")
        batch = batch.select(np.arange(min(n, len(batch))))
    return batch


def check_mdm_fits(mdm, task, mdm_path: str) -> None:
    from .errors import UpoError

    if mdm.vocab_size != task.vocab_size or mdm.cfg.seq_len != task.seq_len:
        raise UpoError(
            f"{mdm_path}: MDM has vocabulary {mdm.vocab_size} and length {mdm.cfg.seq_len}, "
            f"task {task.name} needs {task.vocab_size} and {task.seq_len}"
        )


def run_eval(args) -> int:
    from .errors import UpoError
    from .tasks.registry import TEXT_TASK_NAMES

    for flag, value in (("--k", args.k), ("--pass-at", args.pass_at), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UpoError(f"{flag} must be at least 1, got {value}")
    if args.task in TEXT_TASK_NAMES:
        return run_text_task_eval(args)
    # The --json lock, once open_progress takes it, is held to the very end, error or not.
    with contextlib.ExitStack() as held:
        return run_token_task_eval(args, held)


def run_token_task_eval(args, held: contextlib.ExitStack) -> int:
    from .errors import UpoError
    from .evaluate import evaluate_policy, markdown_table
    from .io_utils import check_dir_target, check_file_target
    from .models.registry import is_hf_model, load_mdm
    from .policies.resolve import resolve_policy
    from .tasks.registry import TEXT_TASK_NAMES, get_task

    if is_hf_model(args.mdm):
        raise UpoError(
            f"{args.mdm} is a Hugging Face MDM, and {args.task} is a token task for upo's own "
            f"MDMs; Hugging Face MDMs decode the text tasks ({', '.join(TEXT_TASK_NAMES)})"
        )
    if args.resume and not args.json:
        raise UpoError("--resume needs --json: the finished batches are kept beside that file")
    given = [f"--{f.replace('_', '-')}" for f in HF_FLAGS if getattr(args, f)]
    if given:
        raise UpoError(f"{given[0]} is for text tasks ({', '.join(TEXT_TASK_NAMES)})")
    if args.batch_size is None:
        args.batch_size = 64
    check_file_target(args.json)
    check_dir_target(args.plot, "--plot")
    for figure in FIGURES if args.plot else ():
        check_file_target(Path(args.plot) / figure)
    task = get_task(args.task)
    mdm = load_mdm(
        args.mdm, threads=args.threads, options={"dtype": args.dtype} if args.dtype else None
    )
    check_mdm_fits(mdm, task, args.mdm)
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not names:
        raise UpoError("--policies is empty")
    policies = [resolve_policy(name, mdm) for name in names]
    # A checkpoint is shown by its folder name; two folders of one name (runs/a/policy,
    # runs/b/policy) are shown as given instead, so their rows stay apart.
    shown = [p.name for p in policies]
    for policy, given in zip(policies, names):
        if shown.count(policy.name) > 1 and given != policy.name:
            policy.name = given
    batch = load_eval_data(task, args.data, args.n, args.skip_invalid)
    if args.batch_size < 1:
        raise UpoError(f"--batch-size must be at least 1, got {args.batch_size}")
    if (args.show_order or args.plot) and not 0 <= args.show_item < len(batch):
        raise UpoError(f"--show-item {args.show_item}: there are {len(batch)} items (0-based)")
    store = open_progress(args, mdm, names, held) if args.json else None
    results = []
    for index, policy in enumerate(policies):
        runs = len(batch) * (args.pass_at if args.pass_at > 1 and not policy.deterministic else 1)
        with tqdm(total=runs, desc=f"eval {policy.name}", file=sys.stderr) as bar:
            n_samples = args.pass_at if not policy.deterministic else 1
            res = evaluate_policy(
                mdm,
                task,
                batch,
                policy,
                args.batch_size,
                k=args.k,
                seed=args.seed,
                pass_at=n_samples,
                progress=bar.update,
                store=store,
                store_key=f"p{index}",
            )
        results.append(res)
    note = getattr(mdm, "dtype_note", None)
    print(
        f"\n{task.name}, {len(batch)} items, MDM {args.mdm}" + (f" ({note})" if note else "") + "\n"
    )
    print(markdown_table(results))
    difficulty = task.difficulty(batch)
    levels = np.unique(difficulty)
    by = getattr(task, "difficulty_name", "blanks")
    if len(levels) > 1:
        print(f"\nsolve rate by number of {by}:\n")
        print("| policy | " + " | ".join(str(int(lv)) for lv in levels) + " |")
        print("|---|" + "---|" * len(levels))
        for r in results:
            print(
                f"| {r.policy} | "
                + " | ".join(f"{100 * r.solved[difficulty == lv].mean():.1f}%" for lv in levels)
                + " |"
            )
    if args.json:
        summaries = []
        for r in results:
            s = r.summary()
            s[f"solve_rate_by_{by}"] = {
                str(int(lv)): round(float(r.solved[difficulty == lv].mean()), 4) for lv in levels
            }
            summaries.append(s)
        write_results(
            args.json,
            {
                "task": task.name,
                "n": len(batch),
                "mdm": args.mdm,
                # the dtype the MDM ran in: "auto" differs by CPU (upo.models.precision)
                "dtype": used_dtype(mdm, args),
                "dtype_requested": args.dtype or "auto",
                "data": args.data,
                "k": args.k,
                "seed": args.seed,
                "results": summaries,
            },
            store,
        )
        print(f"\nwrote {args.json}", file=sys.stderr)
    side = getattr(getattr(task, "spec", None), "n", None)  # grid side, None for sequences
    if args.plot:
        from .plots import fill_orders, solve_rate_bars, solve_rate_by_difficulty

        out = Path(args.plot)
        solve_rate_bars(
            results, out / "solve_rate.png", f"{task.name}: {len(batch)} held-out puzzles"
        )
        solve_rate_by_difficulty(results, task.difficulty(batch), out / "solve_rate_by_blanks.png")
        if side is not None:  # the fill-order panels draw grids
            fill_orders(results, args.show_item, side, out / "fill_order.png")
        print(f"wrote figures to {out}", file=sys.stderr)
    if args.show_order:
        from .plots import order_text

        for r in results:
            order = r.order[args.show_item]
            # A grid as a grid; a sequence as the reveal step of each masked position in order.
            text = (
                order_text(order, side)
                if side is not None
                else " ".join(str(int(v)) for v in order if v >= 0)
            )
            print(f"\nfill order of item {args.show_item} under {r.policy}:\n{text}")
    return 0


def used_dtype(mdm, args) -> str:
    """The dtype the MDM decodes in, as load_mdm chose it; the request for other Denoisers."""
    return getattr(mdm, "dtype_used", None) or args.dtype or "auto"


def write_results(path: str, results: dict, store) -> None:
    """Write --json, then drop the batches kept for --resume. When the write fails (disk full)
    the batches stay, and the one-line error says how to finish without decoding them again."""
    from .errors import UpoError
    from .io_utils import write_json

    try:
        write_json(path, results)
    except UpoError as err:
        raise UpoError(
            f"{err}; the decoded batches are kept in {store.folder}: "
            f"run the same command with --resume to write the results"
        ) from None
    store.finish()  # the results are safe in --json now


def open_progress(args, mdm, names: list[str], held: contextlib.ExitStack):
    """The store of finished batches beside --json (see upo.eval_progress), keyed by everything
    the results depend on, so that --resume can only continue the same evaluation. `held` keeps
    the lock on --json from here to the end of the run: a second upo process on the same --json
    is refused rather than reusing, deleting or overwriting this run's batches."""
    from .eval_progress import EvalProgress
    from .io_utils import file_digest, output_lock

    def weights_digest(name: str) -> str | None:
        path = Path(name.rpartition("@")[0] or name) / "model.safetensors"
        return file_digest(path) if path.is_file() else None

    settings = {
        "task": args.task,
        "mdm": mdm.fingerprint(),
        "dtype": used_dtype(mdm, args),  # batches decoded in another dtype must not be mixed in
        "data": file_digest(args.data),
        "n": args.n,
        "skip_invalid": args.skip_invalid,
        "batch_size": args.batch_size,
        "k": args.k,
        "seed": args.seed,
        "pass_at": args.pass_at,
        "policies": names,
        "policy_weights": [weights_digest(name) for name in names],
    }
    held.enter_context(output_lock(args.json))
    return EvalProgress(f"{args.json}.partial", settings, args.resume)


def run_text_task_eval(args) -> int:
    """`upo eval` on a text task: the Hugging Face MDM path of upo.text_decode."""
    from .errors import UpoError
    from .models.registry import is_hf_model
    from .text_decode import text_eval

    if not is_hf_model(args.mdm):
        raise UpoError(
            f"{args.task} is a text task: it needs a Hugging Face MDM (--mdm hf:HUB_ID or hf:DIR)"
        )
    for flag, unused in (
        ("--pass-at", args.pass_at != 1),
        ("--plot", args.plot),
        ("--show-order", args.show_order),
        ("--skip-invalid", args.skip_invalid),
        ("--resume", args.resume),
    ):
        if unused:
            raise UpoError(f"{flag} is not available for text tasks")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.batch_size is None:
        args.batch_size = 8  # sequences of prompt + answer on a large model
    return text_eval(args)


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate unmasking policies")
    p.add_argument("--task", required=True)
    p.add_argument(
        "--mdm",
        required=True,
        help="MDM checkpoint directory; for text tasks a Hugging Face MDM (hf:HUB_ID or hf:DIR)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="puzzles (JSONL, CSV or plain text); text tasks: JSONL / JSON / Parquet / CSV",
    )
    p.add_argument(
        "--policies",
        default="random,confidence,margin,entropy",
        help="comma-separated: random, confidence, margin, entropy, topk-random:K, softmax:TAU, "
        "left-to-right, threshold:P, the search lookahead:K[:GATE[:DEPTH]], a policy checkpoint "
        "directory, or DIR@T to sample it at temperature T",
    )
    p.add_argument("--n", type=int, help="evaluate only the first N items")
    p.add_argument("--batch-size", type=int, help="default: 64, or 8 for text tasks")
    p.add_argument("--k", type=int, default=1, help="positions revealed per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--dtype",
        help="run the MDM in this dtype: float32 makes results independent of --batch-size "
        "(the built-in MDM runs bf16 matmuls where the CPU has native bf16, whose rounding "
        "depends on batch shape; auto, the default, uses float32 on other CPUs)",
    )
    p.add_argument(
        "--pass-at",
        type=int,
        default=1,
        help="N samples per item for stochastic policies: pass@1..N and the likeliest of N",
    )
    p.add_argument(
        "--json",
        help="write results as JSON; until then the finished batches are kept in JSON.partial/",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted evaluation with the same flags from JSON.partial/",
    )
    p.add_argument("--plot", help="directory for PNG figures")
    p.add_argument("--show-order", action="store_true", help="print the fill order of one item")
    p.add_argument("--show-item", type=int, default=0)
    p.add_argument("--skip-invalid", action="store_true")
    add_hf_arguments(p.add_argument_group("text tasks on a Hugging Face MDM"))
    p.set_defaults(func=run_eval)
