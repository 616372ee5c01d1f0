"""`upo eval`: compare unmasking policies on a task's held-out data."""

# Token tasks (upo's own MDMs) and text tasks (a Hugging Face MDM) share one flow: open the MDM,
# the task bound to it and the data; resolve the policies; decode and score each policy with
# upo.evaluate.evaluate_policy; print the table and write --json. What differs by kind is in
# open_token_eval and open_text_eval: the flags each takes, the MDM's options, how the data is
# read, and the few report items only one kind has.

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from ..errors import UpoError
from ..seeds import check_seed
from ..tasks.base import Batch, Task, TokenTask

if TYPE_CHECKING:
    from ..models.denoiser import Denoiser

# The flags only text tasks on a Hugging Face MDM take.
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
FIGURES = ("solve_rate.png", "solve_rate_vs_nfe.png", "solve_rate_by_blanks.png", "fill_order.png")


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


@dataclass
class EvalInputs:
    """What one evaluation runs on, opened and checked before any decoding."""

    mdm: Denoiser
    task: Task  # bound to mdm
    batch: Batch
    note: str | None = None  # after the MDM in the table's title: how it runs
    mdm_fields: dict = field(default_factory=dict)  # --json, after "mdm": how the MDM ran
    task_fields: dict = field(default_factory=dict)  # --json, after "seed": how items were posed
    by_difficulty: bool = False  # also report solve rates by task.difficulty
    resumable: bool = False  # --json keeps finished batches for --resume (upo.eval_progress)


def load_eval_data(task, path: str, n: int | None, skip_invalid: bool = False):
    from ..assets import find

    batch = task.load(find(path, "data"), skip_invalid=skip_invalid)  # or a shipped file by name
    if len(batch) == 0:
        raise UpoError(f"{path}: no items to evaluate")
    if n is not None:
        if n < 1:
            raise UpoError(f"--n must be at least 1, got {n}")
        batch = batch.select(np.arange(min(n, len(batch))))
    return batch


def check_mdm_fits(mdm: Denoiser, task: TokenTask, mdm_path: str) -> None:
    if mdm.vocab_size != task.vocab_size or mdm.cfg.seq_len != task.seq_len:
        raise UpoError(
            f"{mdm_path}: MDM has vocabulary {mdm.vocab_size} and length {mdm.cfg.seq_len}, "
            f"task {task.name} needs {task.vocab_size} and {task.seq_len}"
        )


def run_eval(args) -> int:
    from ..tasks.registry import TEXT_TASK_NAMES

    counts = (
        ("--k", args.k),
        ("--pass-at", args.pass_at),
        ("--threads", args.threads),
        ("--n", args.n),
        ("--batch-size", args.batch_size),
    )
    for flag, value in counts:
        if value is not None and value < 1:
            raise UpoError(f"{flag} must be at least 1, got {value}")
    check_seed(args.seed, "--seed")  # pass@N samples derive seeds seed + 1, seed + 2, ...
    open_eval = open_text_eval if args.task in TEXT_TASK_NAMES else open_token_eval
    # The --json lock, once open_progress takes it, is held to the very end, error or not.
    with contextlib.ExitStack() as held:
        run = open_eval(args)
        names, policies = resolve_policies(args.policies, run.mdm)
        if (args.show_order or args.plot) and not 0 <= args.show_item < len(run.batch):
            raise UpoError(
                f"--show-item {args.show_item}: there are {len(run.batch)} items (0-based)"
            )
        store = None
        if args.json and run.resumable:
            store = open_progress(args, run.mdm, names, held)
        results = [
            evaluate_one(args, run, policy, store, f"p{index}")
            for index, policy in enumerate(policies)
        ]
        report(args, run, results, store, policies)
    return 0


def open_token_eval(args) -> EvalInputs:
    """A token task on one of upo's own MDMs."""
    from ..io_utils import check_dir_target, check_file_target
    from ..models.registry import is_hf_model, load_mdm
    from ..policies.learned import policy_dtype
    from ..tasks.registry import TEXT_TASK_NAMES, get_task

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
    task = task.bind(mdm)
    return EvalInputs(
        mdm,
        task,
        load_eval_data(task, args.data, args.n, args.skip_invalid),
        note=mdm.dtype_note or None,
        # the dtype the MDM ran in: "auto" differs by CPU (upo.models.precision)
        mdm_fields={
            "dtype": used_dtype(mdm, args),
            "dtype_requested": args.dtype or "auto",
            # learned policies run in the MDM's precision (upo.policies.learned.policy_dtype)
            "policy_dtype": policy_dtype(mdm),
        },
        by_difficulty=True,
        resumable=True,
    )


def open_text_eval(args) -> EvalInputs:
    """A text task on a Hugging Face MDM, with the HF flags (add_hf_arguments)."""
    import torch

    from ..io_utils import check_file_target
    from ..models.registry import is_hf_model, load_mdm
    from ..tasks.registry import get_task

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
    if args.batch_size is None:
        args.batch_size = 8  # sequences of prompt + answer on a large model
    check_file_target(args.json)
    options = {}
    if args.gen_length is not None:
        options["gen_length"] = args.gen_length
    if args.block_length is not None:
        options["block_length"] = args.block_length or None
    if args.no_chat:
        options["chat"] = False
    if args.instructions is not None:
        options["instructions"] = args.instructions
    mdm_options = {
        "trust_remote_code": args.trust_remote_code,
        "dtype": args.dtype or "auto",
        "device": args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "mask_id": args.mask_id,
        "confidence": args.confidence or "float32",
        "allow_unpadded_batching": bool(args.allow_unpadded_batching),
    }
    mdm = load_mdm(args.mdm, threads=args.threads, options=mdm_options)
    task = get_task(args.task, options).bind(mdm)
    return EvalInputs(
        mdm,
        task,
        task.load(args.data, n=args.n),
        task_fields={"gen_length": task.gen_length, "block_length": task.block_length},
    )


def resolve_policies(text: str, mdm) -> tuple[list[str], list]:
    """(the names as given, the policies) of --policies."""
    from ..policies.resolve import resolve_policy

    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise UpoError("--policies is empty")
    policies = [resolve_policy(name, mdm) for name in names]
    # A checkpoint is shown by its folder name; two folders of one name (runs/a/policy,
    # runs/b/policy) are shown as given instead, so their rows stay apart.
    shown = [p.name for p in policies]
    for policy, given in zip(policies, names):
        if shown.count(policy.name) > 1 and given != policy.name:
            policy.name = given
    return names, policies


def evaluate_one(args, run: EvalInputs, policy, store, store_key: str):
    """One policy's PolicyResult, with a progress bar; --show prints its first answers."""
    from ..evaluate import evaluate_policy

    policy.to(run.mdm.device)
    samples = args.pass_at if not policy.deterministic else 1
    with tqdm(total=len(run.batch) * samples, desc=f"eval {policy.name}", file=sys.stderr) as bar:
        result = evaluate_policy(
            run.mdm,
            run.task,
            run.batch,
            policy,
            args.batch_size,
            k=args.k,
            seed=args.seed,
            pass_at=samples,
            progress=bar.update,
            store=store,
            store_key=store_key,
        )
    if args.show:  # a text task's flag: its answers as text
        for text in run.task.answers(run.batch, result.outputs)[: args.show]:
            print(f"--- {policy.name}: {text!r}")
    return result


def report(args, run: EvalInputs, results: list, store, policies: list) -> None:
    """The table (and by difficulty), --json, then --plot and --show-order."""
    from ..evaluate import markdown_table

    task, batch = run.task, run.batch
    note = f" ({run.note})" if run.note else ""
    print(f"\n{task.name}, {len(batch)} items, MDM {args.mdm}{note}\n")
    print(markdown_table(results))
    by, difficulty = task.difficulty_name, task.difficulty(batch)
    levels = np.unique(difficulty)
    if run.by_difficulty and len(levels) > 1:
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
            if run.by_difficulty:
                s[f"solve_rate_by_{by}"] = {
                    str(int(lv)): round(float(r.solved[difficulty == lv].mean()), 4)
                    for lv in levels
                }
            summaries.append(s)
        record = {
            "task": task.name,
            "n": len(batch),
            "mdm": args.mdm,
            **run.mdm_fields,
            "data": args.data,
            "k": args.k,
            "seed": args.seed,
            **run.task_fields,
            "results": summaries,
        }
        write_results(args.json, record, store)
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.plot:
        draw_figures(args.plot, task, batch, results, args.show_item, policies, args.k)
    if args.show_order:
        show_orders(task, results, args.show_item)


def draw_figures(
    folder: str, task, batch: Batch, results: list, item: int, policies: list, k: int = 1
) -> None:
    from ..plots import (
        fill_orders,
        policy_family,
        policy_points,
        solve_rate_bars,
        solve_rate_by_difficulty,
        solve_rate_vs_nfe,
    )

    out = Path(folder)
    title = f"{task.name}: {len(batch)} held-out items"
    solve_rate_bars(results, out / "solve_rate.png", title)
    points = policy_points(results, [policy_family(p) for p in policies])
    per_step = f", {k} positions per step" if k > 1 else ""
    solve_rate_vs_nfe(points, out / "solve_rate_vs_nfe.png", title + per_step, join=False)
    solve_rate_by_difficulty(results, task.difficulty(batch), out / "solve_rate_by_blanks.png")
    if task.grid_side is not None:  # the fill-order panels draw grids
        fill_orders(results, item, task.grid_side, out / "fill_order.png", batch.answers)
    print(f"wrote figures to {out}", file=sys.stderr)


def show_orders(task, results: list, item: int) -> None:
    from ..plots import order_text

    for r in results:
        order = r.order[item]
        # A grid as a grid; a sequence as the reveal step of each masked position in order.
        text = (
            order_text(order, task.grid_side)
            if task.grid_side is not None
            else " ".join(str(int(v)) for v in order if v >= 0)
        )
        print(f"\nfill order of item {item} under {r.policy}:\n{text}")


def used_dtype(mdm, args) -> str:
    """The dtype the MDM decodes in, as load_mdm chose it."""
    return mdm.dtype_used


def write_results(path: str, results: dict, store) -> None:
    """Write --json, then drop the batches kept for --resume. When the write fails (disk full)
    the batches stay, and the one-line error says how to finish without decoding them again."""
    from ..io_utils import write_json

    try:
        write_json(path, results)
    except UpoError as err:
        if store is None:
            raise
        raise UpoError(
            f"{err}; the decoded batches are kept in {store.folder}: "
            f"run the same command with --resume to write the results"
        ) from None
    if store is not None:
        store.finish()  # the results are safe in --json now


def open_progress(args, mdm, names: list[str], held: contextlib.ExitStack):
    """The store of finished batches beside --json (see upo.eval_progress), keyed by everything
    the results depend on, so that --resume can only continue the same evaluation. `held` keeps
    the lock on --json from here to the end of the run: a second upo process on the same --json
    is refused rather than reusing, deleting or overwriting this run's batches."""
    from ..eval_progress import EvalProgress
    from ..io_utils import file_digest, output_lock

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


def register(sub) -> None:
    from ..assets import names

    # The shipped files by name, so that the help says what works without a path.
    checkpoints = names("checkpoints")
    mdms = ", ".join(n for n in checkpoints if n.endswith("-mdm")) or "none in this install"
    policies = ", ".join(n for n in checkpoints if not n.endswith("-mdm")) or "none"
    p = sub.add_parser("eval", help="evaluate unmasking policies")
    p.add_argument("--task", required=True)
    p.add_argument(
        "--mdm",
        required=True,
        help=f"MDM checkpoint directory, or a shipped MDM by name ({mdms}; a local directory of "
        "that name wins); for text tasks a Hugging Face MDM (hf:HUB_ID or hf:DIR)",
    )
    p.add_argument(
        "--data",
        required=True,
        help="puzzles (JSONL, CSV or plain text), or a shipped puzzle file by name "
        "(e.g. sudoku4-test.jsonl; a local file of that name wins); text tasks: JSONL / JSON / "
        "Parquet / CSV, or hf:NAME[:CONFIG]:SPLIT with the datasets package",
    )
    p.add_argument(
        "--policies",
        default="random,confidence,margin,entropy",
        help="comma-separated: random, confidence, margin, entropy, topk-random:K, softmax:TAU, "
        "left-to-right, threshold:P, the search lookahead:K[:GATE[:DEPTH]], a policy checkpoint "
        f"directory or a shipped policy by name ({policies}; a local directory of that name "
        "wins), or DIR@T to sample it at temperature T",
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
