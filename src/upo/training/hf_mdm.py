"""`upo mdm train-hf`: train a Hugging Face MDM (its own model code, e.g. LLaDA's, from random
weights) on a text task's format with the masked-diffusion objective, and save it as a normal
Hugging Face model directory that `hf:DIR` loads like a downloaded snapshot.

This is how the whole GPU path (text task, HFDenoiser, UPO on a frozen LLaDA) runs end to end on
a CPU at toy size: the model code is the real one, only its size is small. Each step draws
puzzles from the training file, masks every blank (the task's `batch`), reveals each blank with
probability 1 - t (t ~ U(t_min, t_max) per sequence, at least one stays masked) and minimises the
cross-entropy of the masked blanks' digits: the states a decode visits, one blank per step.

The run directory OUT holds metrics.jsonl and the training state in upo's checkpoint format
(exact --resume); the finished model is written to OUT/model (config.json, model.safetensors,
the model's own code, tokenizer files).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from ..config import check_seed, to_dict
from ..errors import UpoError
from .mdm import lr_at
from .run import Run


@dataclass
class HFMDMTrainConfig:
    """Every knob of an HF MDM training run."""

    model_code: str  # a model directory without weights: config.json, its code, tokenizer
    trust_remote_code: bool = False  # LLaDA and Dream ship their code: must be set explicitly
    model: dict = field(default_factory=dict)  # config.json overrides (sizes)
    task: str = "sudoku4-paper"  # a text task with `filled` targets (the fixed-template Sudoku)
    task_options: dict = field(default_factory=dict)
    train_data: str = "data/sudoku4-train.jsonl"
    val_data: str | None = None  # decoded with max-confidence and random order every eval_every
    val_n: int = 100
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    t_min: float = 0.0
    t_max: float = 1.0
    seed: int = 0
    threads: int = 2
    log_every: int = 20
    eval_every: int = 500
    checkpoint_every: int = 100

    def validate(self) -> None:
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError("trust_remote_code must be true or false")
        if self.steps < 1 or self.batch_size < 1 or self.val_n < 1:
            raise ValueError("steps, batch_size and val_n must be positive")
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("need lr > 0, warmup_steps >= 0 and grad_clip > 0")
        for name in ("log_every", "eval_every", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        check_seed(self.seed)


def build_model(cfg: HFMDMTrainConfig):
    """(model, tokenizer, mask id) from the model code directory and the size overrides."""
    import transformers

    from ..models.hf import config_file, load_tokenizer, resolve_mask_id

    code = Path(cfg.model_code)
    if not (code / "config.json").is_file():
        raise UpoError(f"model_code: {code} has no config.json")
    try:
        config = transformers.AutoConfig.from_pretrained(
            code, trust_remote_code=cfg.trust_remote_code
        )
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise UpoError(
                f"model_code: {code} ships its own code; set trust_remote_code: true in the "
                "config only if you trust it"
            ) from None
        raise UpoError(f"model_code: {code}: {str(err).splitlines()[0]}") from None
    for key, value in cfg.model.items():
        if not hasattr(config, key):
            raise UpoError(f"config: model: {code / 'config.json'} has no setting {key!r}")
        setattr(config, key, value)
    torch.manual_seed(cfg.seed)
    model = transformers.AutoModel.from_config(
        config, trust_remote_code=cfg.trust_remote_code, dtype=torch.float32
    )
    tokenizer = load_tokenizer(str(code), cfg.trust_remote_code)
    if tokenizer is None:
        raise UpoError(f"model_code: {code} has no tokenizer")
    named = {**config_file(transformers, str(code)), **cfg.model}  # what config.json says
    return model, tokenizer, resolve_mask_id(None, config, tokenizer, str(code), named)


def training_view(model, tokenizer, mask_id: int):
    """What a text task binds to: the tokenizer, mask id and end tokens of the model."""
    from ..models.hf import HFDenoiser

    eos = HFDenoiser._eos_ids(model, tokenizer)
    return SimpleNamespace(tokenizer=tokenizer, mask_id=mask_id, eos_ids=eos)


def masked_batch(
    tokens: np.ndarray,
    targets: np.ndarray,
    mask_id: int,
    gen: torch.Generator,
    cfg: HFMDMTrainConfig,
):
    """(inputs, targets, loss mask) of `tokens` (every blank masked) and their `targets` (the
    task's `filled` tokens): each blank revealed with probability 1 - t."""
    tokens, targets = torch.from_numpy(tokens), torch.from_numpy(targets)
    blanks = tokens == mask_id
    t = cfg.t_min + (cfg.t_max - cfg.t_min) * torch.rand(len(tokens), generator=gen)
    keep_masked = (torch.rand(tokens.shape, generator=gen) < t[:, None]) & blanks
    # Every sequence keeps at least one masked blank: a random one where the draw kept none.
    noise = torch.rand(tokens.shape, generator=gen).masked_fill(~blanks, -1.0)
    forced = torch.zeros_like(blanks).scatter_(1, noise.argmax(1, keepdim=True), True) & blanks
    keep_masked |= forced & ~keep_masked.any(1, keepdim=True)
    inputs = torch.where(keep_masked, tokens, targets)
    return inputs, targets, keep_masked


def masked_loss(model, inputs, targets, loss_mask, attention) -> torch.Tensor:
    padded = not bool(attention.all())
    out = model(inputs, attention_mask=attention.long() if padded else None)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return torch.nn.functional.cross_entropy(logits[loss_mask].float(), targets[loss_mask])


@torch.no_grad()
def validate(model, tokenizer, mask_id, task, val) -> dict:
    """Cell accuracy and solve rate of max-confidence and random orders on `val`."""
    from ..evaluate import decode_in_batches
    from ..models.hf import HFDenoiser
    from ..policies.rules import make_rule

    model.eval()
    mdm = HFDenoiser(model, tokenizer, mask_id=mask_id)
    metrics = {}
    for name in ("confidence", "random"):
        out, _, _, _ = decode_in_batches(mdm, val, make_rule(name), 64, block_size=None)
        metrics[f"val_{name}_cell_acc"] = round(float(task.partial_credit(val, out).mean()), 4)
        metrics[f"val_{name}_solved"] = round(float(task.solved(val, out).mean()), 4)
    mdm._hook.remove()
    for p in model.parameters():  # HFDenoiser freezes what it wraps
        p.requires_grad_(True)
    model.train()
    return metrics


def export_model(model, tokenizer, code: Path, out: Path, meta: dict) -> None:
    """A Hugging Face model directory at `out`: weights and config by save_pretrained, the
    model's own code and tokenizer files copied as shipped; published like every checkpoint
    (io_utils.atomic_dir), replacing all of an earlier export."""
    from ..io_utils import atomic_dir, write_json

    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        for f in code.iterdir():
            if f.is_file() and f.name != "config.json" and not (tmp / f.name).exists():
                shutil.copy(f, tmp / f.name)
        write_json(tmp / "upo_training.json", meta)


def train_hf_mdm(
    cfg: HFMDMTrainConfig, out_dir: str | Path, resume: bool = False, command: str = ""
) -> dict:
    from ..tasks.registry import get_task
    from ..tasks.text.sudoku_paper import Sudoku4Paper

    cfg.validate()
    out_dir = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    model, tokenizer, mask_id = build_model(cfg)
    task = get_task(cfg.task, cfg.task_options).bind(training_view(model, tokenizer, mask_id))
    if not isinstance(task, Sudoku4Paper):  # the one text task with fixed answer positions
        raise UpoError(
            f"task {cfg.task}: no fixed answer positions to train on (use sudoku4-paper)"
        )
    train = task.load(cfg.train_data)
    # Tokenized once: the targets of a puzzle never change, and re-encoding the sampled rows at
    # every step would put the tokenizer on the training loop's hot path.
    train_targets = task.filled(train)
    val = task.load(cfg.val_data, n=cfg.val_n) if cfg.val_data else None
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    config = {"kind": "hf-mdm-run", "train": to_dict(cfg)}
    run = Run(out_dir, kind="hf-mdm", task=cfg.task, command=command, config=config)
    if (finished := run.prepare(resume)) is not None:
        return finished
    if resume:
        run.restore(model, opt)
        gen.set_state(run.extra["rng.torch"])
    elapsed = run.state.get("elapsed", 0.0)
    run.open_log()
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{type(model).__name__} from {cfg.model_code}: {n_params / 1e6:.2f}M parameters, "
        f"{len(train)} training puzzles, steps {run.step}->{cfg.steps}",
        file=sys.stderr,
    )
    last_val: dict = {}

    def meta(step: int) -> dict:
        return {
            "sequences_seen": step * cfg.batch_size,
            "train_seconds": round(elapsed, 1),
            "parameters": n_params,
            "validation": last_val,
            "model": str(out_dir / "model"),
        }

    model.train()
    bar = tqdm(range(run.step, cfg.steps), initial=run.step, total=cfg.steps, desc="mdm train-hf")
    for step in bar:
        t0 = time.time()
        rows = torch.randint(0, len(train), (cfg.batch_size,), generator=gen).numpy()
        batch = train.select(np.asarray(rows))
        inputs, targets, loss_mask = masked_batch(
            batch.tokens, train_targets[rows], task.mask_id, gen, cfg
        )
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss = masked_loss(
            model, inputs, targets, loss_mask, torch.from_numpy(batch.attention_mask)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        elapsed += time.time() - t0
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            record = {
                "step": done,
                "loss": round(loss.item(), 5),
                "lr": lr_at(cfg, step),
                "grad_norm": round(float(grad_norm), 4),
                "seconds": round(elapsed, 1),
            }
            if val is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
                last_val = validate(model, tokenizer, mask_id, task, val)
                record.update(last_val)
                bar.write(" ".join(f"{k}={v}" for k, v in last_val.items()))
            bar.set_postfix(loss=f"{loss.item():.4f}")
            run.write(record)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            extra = {"rng.torch": gen.get_state()}
            run.save(model, done, False, meta(done), opt, {"elapsed": elapsed}, extra)
    final = run.meta(cfg.steps, True, meta(cfg.steps))
    # the Hugging Face directory first: a complete run always has its model
    export_model(model, tokenizer, Path(cfg.model_code), out_dir / "model", final)
    return run.save(model, cfg.steps, True, meta(cfg.steps))
