"""`upo mdm train`: the absorbing-state masked-diffusion objective on a task's training stream.

Per sequence draw a mask level t ~ U(t_min, t_max), mask each answer position with probability t,
and minimise cross-entropy on the masked positions. Which positions are answer positions is the
task's business (`task.answer_positions`: all of a Sudoku grid, only the sum of an addition), so a
prompt is never masked and the trainer stays task-agnostic. AdamW with linear warm-up and cosine decay,
gradient clipping, metrics to JSONL, periodic validation, atomic checkpoints and exact --resume.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..checkpoint import (
    checkpoint_json,
    load_weights,
)
from ..config import check_seed, from_dict, to_dict
from ..errors import UpoError
from ..models.precision import DTYPES
from ..models.registry import tiny_dtype
from ..models.tiny import TinyConfig, TinyMDM, masked_diffusion_loss
from ..tasks.base import TokenTask
from ..tasks.registry import TASK_NAMES, TEXT_TASK_NAMES, get_task
from .run import Run


@dataclass
class MDMTrainConfig:
    task: str
    model: dict = field(default_factory=dict)  # TinyConfig fields other than the task's own
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0
    elbo_weight: bool = False
    seed: int = 0
    threads: int = 2
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 100
    val_size: int = 512
    val_puzzles: int = 100
    # Difficulty levels of the validation decodes: blanks for Sudoku, digits for addition, ...
    val_blanks: list[int] = field(default_factory=lambda: [45])
    # A finished tiny-MDM checkpoint to start from (a second stage with a fresh optimiser, schedule
    # and stream seed). Its model config must equal this run's; --resume ignores it.
    init_from: str | None = None
    # The arithmetic of training: auto is the model's bf16 setting where the CPU has native bf16
    # and float32 elsewhere (emulated bf16 is about 60x slower, issue 29); or bfloat16 / float32.
    dtype: str = "auto"

    def validate(self) -> None:
        if self.task in TEXT_TASK_NAMES:
            # upo's own MDM has a fixed token layout per task; text tasks need a tokenizer.
            raise ValueError(
                f"task {self.task} is a text task; `upo mdm train` trains upo's own MDM on a "
                f"token task ({', '.join(TASK_NAMES)}); text tasks take `upo mdm train-hf`"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.checkpoint_every < 1:
            raise ValueError("lr must be positive, warmup_steps >= 0, checkpoint_every >= 1")
        if self.weight_decay < 0 or self.grad_clip <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need weight_decay >= 0, grad_clip > 0 and 0 <= min_lr_ratio <= 1")
        for name in ("log_every", "eval_every", "threads", "val_size", "val_puzzles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_seed(self.seed)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r:.40}")


def lr_at(cfg: MDMTrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def build_model(cfg: MDMTrainConfig, task) -> TinyMDM:
    fields = {**cfg.model, **task.model_defaults()}
    model_cfg = from_dict(TinyConfig, fields, "config: model")
    # config.json then records the arithmetic the weights were really trained in
    model_cfg.bf16 = tiny_dtype(cfg.dtype, model_cfg.bf16) == "bfloat16"
    return TinyMDM(model_cfg)


def run_config(cfg: MDMTrainConfig) -> dict:
    """The train config as recorded in config.json. dtype auto is left out, as runs started
    before the field existed have it, so that they still --resume."""
    config = to_dict(cfg)
    if config.get("dtype") == "auto":
        del config["dtype"]
    return config


def load_initial_weights(model: TinyMDM, ckpt_dir: str | Path) -> str:
    """Load `ckpt_dir`'s weights into `model`, which must have the same config; returns the
    checkpoint's fingerprint, recorded in the new run's meta.json."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "config.json").is_file():
        raise UpoError(f"init_from: {ckpt_dir} is not an MDM checkpoint (no config.json)")
    # bf16 is the arithmetic, not the model: a stage trained in bf16 may go on in float32 on a
    # CPU without native bf16
    saved = dict(checkpoint_json(ckpt_dir, "config.json").get("model") or {})
    saved.pop("bf16", None)
    ours = {k: v for k, v in to_dict(model.cfg).items() if k != "bf16"}
    if saved != ours:
        keys = sorted(
            k for k in set(ours) | set(saved or {}) if (saved or {}).get(k) != ours.get(k)
        )
        raise UpoError(f"init_from: {ckpt_dir} has another model config (differs in {keys})")
    load_weights(model, ckpt_dir / "model.safetensors")
    return model.fingerprint()


def answer_positions(task: TokenTask) -> torch.Tensor:
    """[L] bool: the positions the task lets the MDM mask."""
    return torch.as_tensor(task.answer_positions, dtype=torch.bool)


def draw_mask(
    tokens: torch.Tensor,
    cfg: MDMTrainConfig,
    gen: torch.Generator,
    maskable: torch.Tensor | None = None,
):
    b, l = tokens.shape
    if maskable is None:
        maskable = torch.ones(l, dtype=torch.bool)
    t = cfg.t_min + (cfg.t_max - cfg.t_min) * torch.rand(b, generator=gen)
    mask = (torch.rand(b, l, generator=gen) < t[:, None]) & maskable
    # Every sequence needs at least one masked position to contribute a loss. Drawing an index
    # into the maskable positions keeps the random stream of all-maskable tasks (Sudoku) as it was.
    where = maskable.nonzero().squeeze(1)
    empty = ~mask.any(1)
    forced = where[torch.randint(0, len(where), (b,), generator=gen)]
    mask[empty, forced[empty]] = True
    return t, mask


@torch.no_grad()
def masked_accuracy(
    model, tokens: torch.Tensor, level: float, seed: int, maskable: torch.Tensor | None = None
) -> float:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(tokens.shape, generator=gen) < level
    if maskable is not None:
        mask &= maskable
    logits, _ = model(tokens.masked_fill(mask, model.mask_id))
    right = (logits.argmax(-1) == tokens) & mask
    return right.sum().item() / max(1, mask.sum().item())


def validation_puzzles(task, cfg: MDMTrainConfig):
    """{difficulty level: Batch} made by the task's own generator, fixed seeds."""
    try:
        return {
            level: task.generate(cfg.val_puzzles, (level, level), seed=10_000 + level)
            for level in cfg.val_blanks
        }
    except ValueError as err:  # a level the task cannot make
        raise UpoError(f"config: val_blanks {cfg.val_blanks}: {err}") from None


@torch.no_grad()
def validate(model, task, val_grids, val_puzzles) -> dict:
    from ..decode import unmask
    from ..policies.rules import make_rule

    model.eval()
    maskable = answer_positions(task)
    metrics = {
        f"val_acc@{lvl}": masked_accuracy(model, val_grids, lvl, seed=i, maskable=maskable)
        for i, lvl in enumerate((0.25, 0.5, 0.75))
    }
    for blanks, batch in val_puzzles.items():
        traj = unmask(
            model,
            torch.from_numpy(batch.tokens),
            make_rule("confidence"),
            attention_mask=torch.from_numpy(batch.attention_mask),
        )
        metrics[f"val_solve@{blanks}"] = float(task.solved(batch, traj.tokens.numpy()).mean())
    model.train()
    return metrics


def train_mdm(
    cfg: MDMTrainConfig, out_dir: str | Path, resume: bool = False, command: str = ""
) -> dict:
    task = get_task(cfg.task)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, task)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    config = {
        "kind": "tiny",
        "task": cfg.task,
        "model": to_dict(model.cfg),
        "train": run_config(cfg),
    }
    run = Run(out_dir, kind="mdm", task=cfg.task, command=command, config=config)
    if (finished := run.prepare(resume)) is not None:
        return finished
    init_fingerprint = None
    if resume:
        run.restore(model, opt)
        run.note_dtype("dtype", model.dtype_used)
        if "rng.torch" not in run.extra:
            raise UpoError(f"{out_dir}: train_state.safetensors has no random generator state")
        gen.set_state(run.extra["rng.torch"])
        init_fingerprint = run.saved("meta.json").get("init_fingerprint")
    elif cfg.init_from is not None:
        init_fingerprint = load_initial_weights(model, cfg.init_from)
    elapsed = run.state.get("elapsed", 0.0)

    stream = task.stream(cfg.seed)
    val_grids = torch.from_numpy(task.stream(cfg.seed + 7919).batch(0, cfg.val_size))
    val_puzzles = validation_puzzles(task, cfg)
    maskable = answer_positions(task)
    run.open_log()
    n_params = model.num_parameters()
    print(
        f"MDM for {task.name}: {n_params / 1e6:.2f}M parameters, steps {run.step}->{cfg.steps}, "
        f"{model.dtype_used} (dtype {cfg.dtype})",
        file=sys.stderr,
    )
    last_val: dict = {}

    def save(step: int, complete: bool) -> dict:
        meta = {
            "sequences_seen": step * cfg.batch_size,
            "train_seconds": round(elapsed, 1),
            "parameters": n_params,
            "dtype": model.dtype_used,
            "validation": last_val,
            "init_from": cfg.init_from,
            "init_fingerprint": init_fingerprint,
        }
        resume_with = {
            "state": {"elapsed": elapsed},
            "extra_tensors": {"rng.torch": gen.get_state()},
        }
        return run.save(model, step, complete, meta, opt, **({} if complete else resume_with))

    model.train()
    bar = tqdm(
        range(run.step, cfg.steps),
        initial=run.step,
        total=cfg.steps,
        desc="mdm train",
        file=sys.stderr,
    )
    window_t, window_n = time.time(), 0
    for step in bar:
        t0 = time.time()
        tokens = torch.from_numpy(stream.batch(step, cfg.batch_size))
        t, mask = draw_mask(tokens, cfg, gen, maskable)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss = masked_diffusion_loss(model, tokens, t, mask, cfg.elbo_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        elapsed += time.time() - t0
        window_n += cfg.batch_size
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            rate = window_n / max(1e-9, time.time() - window_t)
            window_t, window_n = time.time(), 0
            record = {
                "step": done,
                "loss": round(loss.item(), 5),
                "lr": lr_at(cfg, step),
                "grad_norm": round(float(grad_norm), 4),
                "seq_per_s": round(rate, 1),
            }
            bar.set_postfix(loss=f"{loss.item():.4f}", seq_s=f"{rate:.0f}")
            if done % cfg.eval_every == 0 or done == cfg.steps:
                last_val = validate(model, task, val_grids, val_puzzles)
                record.update(last_val)
                bar.write(" ".join(f"{k}={v:.4f}" for k, v in last_val.items()))
            run.write(record)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            save(done, complete=False)
    return save(cfg.steps, complete=True)
