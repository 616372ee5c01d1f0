"""An evaluation of unmasking policies on a task's held-out data, below the command line.

`upo eval` parses its flags into EvalSettings and prints what `Evaluation` returns; scripts, the
demo and the lm-eval model call the same functions:

    from upo.evaluation import EvalSettings, evaluate
    record, results = evaluate(EvalSettings("sudoku4", "sudoku4-mdm", "sudoku4-test.jsonl",
                                            "confidence,margin", n=100))

Token tasks (upo's own MDMs) and text tasks (a Hugging Face MDM) share one flow: open the MDM,
the task bound to it and the data; resolve the policies; decode and score each policy with
upo.evaluate.evaluate_policy; write the JSON record. What differs by kind is in open_token_inputs
and open_text_inputs: the settings each takes, the MDM's options, how the data is read, and the
few record fields only one kind has. A bad setting raises SettingError, worded with the
EvalSettings field's name (`pass_at must be at least 1`); `upo eval` words it with its flags.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .assets import find
from .cache import check_cacheable
from .errors import SettingError, UpoError
from .eval_progress import EvalProgress
from .evaluate import PolicyResult, evaluate_policy
from .io_utils import check_dir_target, check_file_target, file_digest, output_lock, write_json
from .models.denoiser import Denoiser
from .models.registry import is_hf_model, load_mdm
from .policies.learned import policy_dtype
from .policies.resolve import resolve_policy
from .seeds import check_seed
from .tasks.base import Batch, Task, TokenTask
from .tasks.registry import TEXT_TASK_NAMES, get_task

# The files `upo eval --plot DIR` writes, checked before any work like --json.
FIGURES = ("solve_rate.png", "solve_rate_vs_nfe.png", "solve_rate_by_blanks.png", "fill_order.png")


@dataclass
class EvalSettings:
    """Everything one evaluation depends on; each field is the `upo eval` flag of its name."""

    task: str
    mdm: str
    data: str
    policies: str = "random,confidence,margin,entropy"  # comma-separated names
    n: int | None = None
    batch_size: int | None = None  # None: 64, or 8 for text tasks
    k: int = 1
    seed: int = 0
    threads: int | None = None
    dtype: str | None = None
    pass_at: int = 1
    json: str | None = None
    resume: bool = False
    plot: str | None = None  # only checked here (as a target); the CLI draws the figures
    show_order: bool = False
    skip_invalid: bool = False
    # Text tasks on a Hugging Face MDM only (HF_FIELDS).
    trust_remote_code: bool = False
    device: str | None = None
    mask_id: int | None = None
    gen_length: int | None = None
    block_length: int | None = None  # 0 = one block
    no_chat: bool = False
    instructions: str | None = None
    show: int = 0
    confidence: str | None = None
    allow_unpadded_batching: bool = False
    # Every task: block-wise key/value caching, none, prefix or dual (docs/cache.md). Last, so
    # that the positions of the fields above stay as they were.
    cache: str = "none"


# The settings only text tasks on a Hugging Face MDM take.
HF_FIELDS = (
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


@dataclass
class EvalInputs:
    """What one evaluation runs on, opened and checked before any decoding."""

    mdm: Denoiser
    task: Task  # bound to mdm
    batch: Batch
    note: str | None = None  # after the MDM in the table's title: how it runs
    mdm_fields: dict = field(default_factory=dict)  # JSON, after "mdm": how the MDM ran
    task_fields: dict = field(default_factory=dict)  # JSON, after "seed": how items were posed
    by_difficulty: bool = False  # also report solve rates by task.difficulty
    resumable: bool = False  # the JSON keeps finished batches for --resume (upo.eval_progress)


def load_eval_data(task, path: str, n: int | None, skip_invalid: bool = False):
    batch = task.load(find(path, "data"), skip_invalid=skip_invalid)  # or a shipped file by name
    if len(batch) == 0:
        raise UpoError(f"{path}: no items to evaluate")
    if n is not None:
        if n < 1:
            raise SettingError(lambda name: f"{name('n')} must be at least 1, got {n}")
        batch = batch.select(np.arange(min(n, len(batch))))
    return batch


def check_mdm_fits(mdm: Denoiser, task: TokenTask, mdm_path: str) -> None:
    if mdm.vocab_size != task.vocab_size or mdm.cfg.seq_len != task.seq_len:
        raise UpoError(
            f"{mdm_path}: MDM has vocabulary {mdm.vocab_size} and length {mdm.cfg.seq_len}, "
            f"task {task.name} needs {task.vocab_size} and {task.seq_len}"
        )


def check_counts(s: EvalSettings) -> None:
    for field_name in ("k", "pass_at", "threads", "n", "batch_size"):
        value = getattr(s, field_name)
        if value is not None and value < 1:
            raise SettingError(
                lambda name, f=field_name, v=value: f"{name(f)} must be at least 1, got {v}"
            )
    # pass@N samples derive seeds seed + 1, seed + 2, ...
    SettingError.check(check_seed, s.seed, "seed")


def open_inputs(s: EvalSettings) -> EvalInputs:
    """The MDM, task and data of `s`, every setting checked; sets s.batch_size's default."""
    check_counts(s)
    return open_text_inputs(s) if s.task in TEXT_TASK_NAMES else open_token_inputs(s)


def open_token_inputs(s: EvalSettings) -> EvalInputs:
    """A token task on one of upo's own MDMs."""
    if is_hf_model(s.mdm):
        raise UpoError(
            f"{s.mdm} is a Hugging Face MDM, and {s.task} is a token task for upo's own "
            f"MDMs; Hugging Face MDMs decode the text tasks ({', '.join(TEXT_TASK_NAMES)})"
        )
    if s.resume and not s.json:
        raise SettingError(
            lambda name: (
                f"{name('resume')} needs {name('json')}: the finished batches are kept "
                "beside that file"
            )
        )
    given = [f for f in HF_FIELDS if getattr(s, f)]
    if given:
        texts = ", ".join(TEXT_TASK_NAMES)
        raise SettingError(lambda name: f"{name(given[0])} is for text tasks ({texts})")
    if s.batch_size is None:
        s.batch_size = 64
    check_file_target(s.json)
    SettingError.check(check_dir_target, s.plot, "plot")
    for figure in FIGURES if s.plot else ():
        check_file_target(Path(s.plot) / figure)
    task = get_task(s.task)
    mdm = load_mdm(s.mdm, threads=s.threads, options={"dtype": s.dtype} if s.dtype else None)
    check_mdm_fits(mdm, task, s.mdm)
    task = task.bind(mdm)
    return EvalInputs(
        mdm,
        task,
        load_eval_data(task, s.data, s.n, s.skip_invalid),
        note=mdm.dtype_note or None,
        # the dtype the MDM ran in: "auto" differs by CPU (upo.models.precision)
        mdm_fields={
            "dtype": mdm.dtype_used,
            "dtype_requested": s.dtype or "auto",
            # learned policies run in the MDM's precision (upo.policies.learned.policy_dtype)
            "policy_dtype": policy_dtype(mdm),
        },
        by_difficulty=True,
        resumable=True,
    )


def open_text_inputs(s: EvalSettings) -> EvalInputs:
    """A text task on a Hugging Face MDM, with the HF settings (HF_FIELDS)."""
    if not is_hf_model(s.mdm):
        raise SettingError(
            lambda name: (
                f"{s.task} is a text task: it needs a Hugging Face MDM ({name('mdm')} "
                "HUB_ID, hf:HUB_ID or hf:DIR)"
            )
        )
    for field_name, unused in (
        ("pass_at", s.pass_at != 1),
        ("plot", s.plot),
        ("show_order", s.show_order),
        ("skip_invalid", s.skip_invalid),
        ("resume", s.resume),
    ):
        if unused:
            raise SettingError(
                lambda name, f=field_name: f"{name(f)} is not available for text tasks"
            )
    if s.batch_size is None:
        s.batch_size = 8  # sequences of prompt + answer on a large model
    check_file_target(s.json)
    options = {}
    if s.gen_length is not None:
        options["gen_length"] = s.gen_length
    if s.block_length is not None:
        options["block_length"] = s.block_length or None
    if s.no_chat:
        options["chat"] = False
    if s.instructions is not None:
        options["instructions"] = s.instructions
    mdm_options = {
        "trust_remote_code": s.trust_remote_code,
        "dtype": s.dtype or "auto",
        "device": s.device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "mask_id": s.mask_id,
        "confidence": s.confidence or "float32",
        "allow_unpadded_batching": bool(s.allow_unpadded_batching),
    }
    mdm = load_mdm(s.mdm, threads=s.threads, options=mdm_options)
    task = get_task(s.task, options).bind(mdm)
    return EvalInputs(
        mdm,
        task,
        task.load(s.data, n=s.n),
        task_fields={"gen_length": task.gen_length, "block_length": task.block_length},
    )


def resolve_policies(text: str, mdm) -> tuple[list[str], list]:
    """(the names as given, the policies) of a comma-separated list of policy names."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise SettingError(lambda name: f"{name('policies')} is empty")
    policies = [resolve_policy(name, mdm) for name in names]
    # A checkpoint is shown by its folder name; two folders of one name (runs/a/policy,
    # runs/b/policy) are shown as given instead, so their rows stay apart.
    shown = [p.name for p in policies]
    for policy, given in zip(policies, names):
        if shown.count(policy.name) > 1 and given != policy.name:
            policy.name = given
    return names, policies


def evaluate_one(
    run: EvalInputs,
    policy,
    batch_size: int,
    k: int = 1,
    seed: int = 0,
    pass_at: int = 1,
    store=None,
    store_key: str = "",
    progress=None,
    cache: str = "none",
) -> PolicyResult:
    """One policy's PolicyResult. `progress` None: a progress bar on stderr; else a callable
    advanced by the items decoded (the demo's one bar over every table)."""
    policy.to(run.mdm.device)
    samples = pass_at if not policy.deterministic else 1
    bar = None
    if progress is None:
        bar = tqdm(total=len(run.batch) * samples, desc=f"eval {policy.name}", file=sys.stderr)
        progress = bar.update
    with bar if bar is not None else contextlib.nullcontext():
        return evaluate_policy(
            run.mdm,
            run.task,
            run.batch,
            policy,
            batch_size,
            k=k,
            seed=seed,
            pass_at=samples,
            progress=progress,
            store=store,
            store_key=store_key,
            cache=cache,
        )


def solve_rates_by_level(run: EvalInputs, result: PolicyResult) -> dict[str, float]:
    """{difficulty level: solve rate} of one policy: the breakdown the table and JSON give when
    the items differ in difficulty."""
    difficulty = run.task.difficulty(run.batch)
    return {
        str(int(lv)): float(result.solved[difficulty == lv].mean()) for lv in np.unique(difficulty)
    }


def results_record(s: EvalSettings, run: EvalInputs, results: list) -> dict:
    """The JSON record of an evaluation (upo eval --json), field order fixed."""
    summaries = []
    for r in results:
        summary = r.summary()
        if run.by_difficulty:
            summary[f"solve_rate_by_{run.task.difficulty_name}"] = {
                level: round(rate, 4) for level, rate in solve_rates_by_level(run, r).items()
            }
        summaries.append(summary)
    return {
        "task": run.task.name,
        "n": len(run.batch),
        "mdm": s.mdm,
        **run.mdm_fields,
        "data": s.data,
        "k": s.k,
        **({"cache": s.cache} if s.cache != "none" else {}),  # none: the record as before
        "seed": s.seed,
        **run.task_fields,
        "results": summaries,
    }


class Evaluation:
    """One evaluation, step by step, so that a caller can check its inputs before decoding and
    print between decoding and writing: open (inputs, policies) -> run (takes the JSON's lock and
    its store of finished batches, decodes every policy) -> write (the JSON, then drops the
    store). Use it in a `with` block: the lock on the JSON is held from `run` to the block's end,
    error or not, so a second process on the same JSON is refused rather than reusing, deleting
    or overwriting this one's batches."""

    def __init__(self, settings: EvalSettings):
        self.settings = settings
        self.inputs = open_inputs(settings)
        check_cacheable(self.inputs.mdm, settings.cache)
        self.names, self.policies = resolve_policies(settings.policies, self.inputs.mdm)
        self.store = None
        self._held = contextlib.ExitStack()

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc) -> None:
        self._held.close()

    def run(self, progress=None) -> list[PolicyResult]:
        s = self.settings
        if s.json and self.inputs.resumable:
            self.store = open_progress(s, self.inputs.mdm, self.names, self._held)
        return [
            evaluate_one(
                self.inputs, policy, s.batch_size, s.k, s.seed, s.pass_at,
                self.store, f"p{index}", progress, s.cache,
            )
            for index, policy in enumerate(self.policies)
        ]  # fmt: skip

    def write(self, results: list) -> dict:
        """The JSON record; written to settings.json when set."""
        record = results_record(self.settings, self.inputs, results)
        if self.settings.json:
            write_results(self.settings.json, record, self.store)
        return record


def evaluate(settings: EvalSettings, progress=None) -> tuple[dict, list[PolicyResult]]:
    """(the JSON record, the results) of the evaluation `settings` describe, written to
    settings.json when set: `upo eval` without its printing."""
    with Evaluation(settings) as evaluation:
        results = evaluation.run(progress)
        return evaluation.write(results), results


def write_results(path: str, results: dict, store) -> None:
    """Write the JSON, then drop the batches kept for --resume. When the write fails (disk full)
    the batches stay, and the one-line error says how to finish without decoding them again."""
    try:
        write_json(path, results)
    except UpoError as err:
        if store is None:
            raise
        failure = str(err)  # `err` is unbound once this block ends; the wording runs later too
        raise SettingError(
            lambda name: (
                f"{failure}; the decoded batches are kept in {store.folder}: run the same "
                f"evaluation with {name('resume')} to write the results"
            )
        ) from None
    if store is not None:
        store.finish()  # the results are safe in the JSON now


def open_progress(s: EvalSettings, mdm, names: list[str], held: contextlib.ExitStack):
    """The store of finished batches beside the JSON (see upo.eval_progress), keyed by
    everything the results depend on, so that --resume can only continue the same evaluation.
    `held` keeps the lock on the JSON from here to the end of the run."""

    def weights_digest(name: str) -> str | None:
        path = Path(name.rpartition("@")[0] or name) / "model.safetensors"
        return file_digest(path) if path.is_file() else None

    settings = {
        "task": s.task,
        "mdm": mdm.fingerprint(),
        "dtype": mdm.dtype_used,  # batches decoded in another dtype must not be mixed in
        "data": file_digest(s.data),
        "n": s.n,
        "skip_invalid": s.skip_invalid,
        "batch_size": s.batch_size,
        "k": s.k,
        **({"cache": s.cache} if s.cache != "none" else {}),
        "seed": s.seed,
        "pass_at": s.pass_at,
        "policies": names,
        "policy_weights": [weights_digest(name) for name in names],
    }
    held.enter_context(output_lock(s.json))
    return EvalProgress(f"{s.json}.partial", settings, s.resume)
