"""`upo policy train`: UPO, i.e. GRPO over unmasking orders, kept near a reference rule.

One rollout round:
 1. rollout: P prompts x G samples decoded together in one batched call with the current policy,
    positions sampled at `temperature`; every visited state is recorded (MDM features cached in
    bf16), so the update phase runs zero MDM forwards;
 2. rewards per trajectory (fraction of blanks right, or solved), advantages r - mean_group(r);
 3. `inner_steps` optimiser steps on the cached states: clipped ratio objective per unmasking
    step plus beta times the regulariser (cross-entropy to one-hot references, the clipped-weight
    score-function KL estimator to stochastic ones).

Budgets count as in TRL's GRPOTrainer, which the paper used: `max_steps` counts optimiser steps,
and a rollout batch serves `inner_steps` (TRL's num_iterations) of them. The older `steps` counts
rollout rounds.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import (
    checkpoint_json,
    git_commit,
    load_train_state,
    load_weights,
    prepare_run_dir,
)
from ..config import check_seed, from_dict, to_dict
from ..errors import UpoError
from ..evaluate import evaluate_policy, padding_safe_batch_size
from ..io_utils import JsonlLog
from ..models.registry import check_mdm_task, load_mdm
from ..policies.learned import (
    LearnedPolicy,
    PolicyConfig,
    PolicyInputs,
    PolicyNet,
    is_decision,
    load_policy,
    save_policy,
)
from ..policies.rules import make_rule
from ..tasks.registry import get_task
from ..training.distributed import Distributed, check_prompt_split
from ..training.reporting import reporter_opener
from .references import Reference, make_reference
from .rollout import States, collect


@dataclass
class UPOConfig:
    """Every knob of a UPO run. Paper values (LLaDA-8B) in brackets where they differ."""

    task: str = "sudoku9"
    mdm: str = "checkpoints/sudoku9-mdm"
    train_data: str = "data/sudoku9-train.jsonl"
    val_data: str | None = None  # held-out puzzles for periodic evaluation (never the test set)
    val_n: int = 200
    policy: dict = field(
        default_factory=dict
    )  # PolicyConfig fields (feature_dim comes from the MDM)
    init: str = "pretrained"  # "pretrained" (from `pretrained`) or "random"
    pretrained: str | None = None  # a policy checkpoint made by `upo policy pretrain`
    # confidence | margin | entropy | softmax:TAU | softmax-vocab:TAU (the paper's softmax
    # reference, with TAU 0.05) | topk:K | none
    reference: str = "confidence"
    beta: float = 0.01  # regulariser weight [1e-4]; 0 = no regularisation
    # The budget, one of two (not both): `steps` rollout rounds, each followed by `inner_steps`
    # optimiser steps; or `max_steps` optimiser steps as TRL counts them [3500], done in
    # ceil(max_steps / inner_steps) rounds (the last one may take fewer inner steps). Neither:
    # DEFAULT_ROUNDS rounds. eval_every and checkpoint_every count rollout rounds.
    steps: int | None = None
    max_steps: int | None = None
    prompts_per_step: int = 16  # per rollout round, over all processes (a multiple of them)
    group_size: int = 8  # G [6]
    inner_steps: int = 4  # mu: optimiser steps per rollout batch, on cached features [16]
    clip_eps: float = 0.5  # epsilon of the clipped ratio [0.5]
    temperature: float = 1.0  # position sampling temperature during rollouts [0.8]
    reward: str = "cell_acc"  # "cell_acc" (paper's Sudoku reward) or "solved"
    scale_rewards: bool = False  # divide advantages by the group std
    # How a trajectory's per-step terms add up: "sum" (the paper's code) or "mean" (divided by
    # the trajectory's step count). Both the policy-gradient term and the regulariser follow it
    # (CE per step; the KL estimator's per-step score terms), so beta weighs the regulariser
    # against the policy gradient the same way under either; trajectories are then averaged.
    step_aggregation: str = "mean"
    lr: float = 3e-4  # [3e-6 for the much larger LLaDA head]
    # Linear warm-up length, in the unit of the budget: optimiser steps with `max_steps` (TRL's
    # warm-up; the rate changes every optimiser step), rollout rounds with `steps` (the rate is
    # constant within a round, as upo always did).
    warmup_steps: int = 5
    weight_decay: float = 0.1
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0  # [0.2]
    # states per forward in the update, in whole trajectories (a longer one is a chunk of its own);
    # small chunks stay in cache
    chunk_states: int = 256
    seed: int = 0
    threads: int = 2
    eval_every: int = 20
    checkpoint_every: int = 5
    # Hugging Face MDMs: load options (trust_remote_code, dtype, device, mask_id, convention)
    # and text-task settings (gen_length, block_length, chat, system). Empty for upo's own MDMs.
    mdm_options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)
    # Where rollout features are cached for the mu update steps: "device" (the MDM's, fastest)
    # or "cpu" (frees accelerator memory; each chunk is copied over when the update uses it).
    feature_cache: str = "device"

    def validate(self) -> None:
        if self.feature_cache not in ("device", "cpu"):
            raise ValueError(f"feature_cache must be 'device' or 'cpu', got {self.feature_cache!r}")
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {self.init!r}")
        if self.init == "pretrained" and not self.pretrained:
            raise ValueError("init 'pretrained' needs `pretrained:` (a policy checkpoint)")
        if self.reward not in ("cell_acc", "solved"):
            raise ValueError(f"reward must be 'cell_acc' or 'solved', got {self.reward!r}")
        if self.step_aggregation not in ("mean", "sum"):
            raise ValueError("step_aggregation must be 'mean' or 'sum'")
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2 (advantages are relative to the group)")
        if self.beta < 0 or self.temperature <= 0 or not 0 < self.clip_eps < 1:
            raise ValueError("need beta >= 0, temperature > 0 and 0 < clip_eps < 1")
        if self.temperature < 1e-6:
            # The policy's logits / temperature overflow float32 long before 1e-300, and
            # sampling that sharp is greedy decoding anyway.
            raise ValueError(f"temperature must be at least 1e-06, got {self.temperature:g}")
        check_seed(self.seed)
        if self.steps is not None and self.max_steps is not None:
            raise ValueError(
                f"give steps (rollout rounds) or max_steps (optimiser steps), not both: "
                f"steps {self.steps}, max_steps {self.max_steps}"
            )
        budget = self.max_steps if self.max_steps is not None else self.rollout_rounds
        if min(budget, self.prompts_per_step, self.inner_steps, self.chunk_states) < 1:
            raise ValueError(
                "steps, max_steps, prompts_per_step, inner_steps and chunk_states must be >= 1"
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, weight_decay >= 0, grad_clip > 0 and warmup_steps >= 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if min(self.eval_every, self.checkpoint_every, self.threads, self.val_n) < 1:
            raise ValueError("eval_every, checkpoint_every, threads and val_n must be >= 1")

    @property
    def rollout_rounds(self) -> int:
        """How many rollout batches the run makes."""
        if self.max_steps is not None:
            return math.ceil(self.max_steps / self.inner_steps)
        return self.steps if self.steps is not None else DEFAULT_ROUNDS

    @property
    def optimizer_steps(self) -> int:
        return self.optimizer_steps_before(self.rollout_rounds)

    def optimizer_steps_before(self, round_: int) -> int:
        """Optimiser steps taken by the first `round_` rollout rounds."""
        done = round_ * self.inner_steps
        return done if self.max_steps is None else min(done, self.max_steps)

    def inner_steps_in(self, round_: int) -> int:
        """Optimiser steps of rollout round `round_` (0-based): the last round of a max_steps
        budget stops at max_steps, like TRL."""
        return self.optimizer_steps_before(round_ + 1) - self.optimizer_steps_before(round_)

    def lr_at(self, round_: int, optimizer_step: int) -> float:
        """Learning rate of an optimiser step (0-based counts), warm-up in the budget's unit."""
        progress = optimizer_step if self.max_steps is not None else round_
        return self.lr * min(1.0, (progress + 1) / max(1, self.warmup_steps))

    def run_config(self) -> dict:
        """The settings recorded with a run and compared on --resume. Without max_steps it is
        the dict earlier versions wrote (steps filled in, no max_steps key), so their run
        directories still resume."""
        out = to_dict(self)
        if self.max_steps is None:
            out["steps"] = self.rollout_rounds
            del out["max_steps"]
        return out


DEFAULT_ROUNDS = 100  # rollout rounds when a config gives neither steps nor max_steps


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool) -> torch.Tensor:
    """A = r - mean over the group of samples of the same prompt (optionally / group std)."""
    r = rewards.view(-1, group_size)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True) + 1e-6)
    return adv.reshape(-1)


def per_item_sum(values: torch.Tensor, item: torch.Tensor, n_items: int) -> torch.Tensor:
    return torch.zeros(n_items, dtype=values.dtype, device=values.device).index_add(0, item, values)


def inputs_on(net, inputs: PolicyInputs) -> PolicyInputs:
    """The policy inputs with their features on the network's device (feature_cache: cpu)."""
    device = next(net.parameters()).device
    if inputs.features.device == device:
        return inputs
    return dataclasses.replace(inputs, features=inputs.features.to(device, non_blocking=True))


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield torch.arange(start, min(start + size, n))


def trajectory_chunks(item: torch.Tensor, n_items: int, size: int) -> list[slice]:
    """Slices of item-major states (sorted by item) that hold whole trajectories, at most `size`
    states each; a trajectory longer than `size` is a chunk of its own."""
    counts = torch.bincount(item, minlength=n_items).tolist()
    out, start, end = [], 0, 0
    for c in counts:
        if end > start and end - start + c > size:
            out.append(slice(start, end))
            start = end
        end += c
    if end > start:
        out.append(slice(start, end))
    return out


@dataclass
class UpdateStats:
    loss: float = 0.0
    reg: float = 0.0
    clip_frac: float = 0.0
    entropy: float = 0.0
    agreement: float = 0.0
    ratio_first: float = 1.0


def step_weights(item: torch.Tensor, n_items: int, aggregation: str) -> torch.Tensor:
    """[N] the weight of each state's term in the loss: 1 / n_items under "sum" (a trajectory's
    steps add up, trajectories are averaged), and further / its trajectory's step count under
    "mean". Every per-step term uses it, the regulariser's included."""
    if aggregation == "mean":
        steps_per_item = per_item_sum(torch.ones(len(item), device=item.device), item, n_items)
        return 1.0 / (steps_per_item[item] * n_items)
    return torch.full((len(item),), 1.0 / n_items, device=item.device)


def update(
    net,
    opt,
    states: States,
    adv: torch.Tensor,
    ref: Reference,
    cfg: UPOConfig,
    sync,
    lrs: list[float] | None = None,
) -> UpdateStats:
    """The mu inner optimiser steps on one rollout batch (cached states only: no MDM calls).

    `lrs`: the learning rate of each inner step, and so how many there are (the last round of a
    max_steps budget may take fewer); None: cfg.inner_steps steps at the optimiser's rate.

    States are walked item-major and chunked at trajectory boundaries, so every chunk's forward
    pass also gives the whole-trajectory log-probs the KL estimator needs: one pass over the
    states per inner step, whatever the regulariser. The first inner step's pass provides
    log g_old (the policy is still g_old there), so the ratio is exactly 1 at that step.
    """
    n_items = len(adv)
    adv = adv.to(states.item.device)
    # Chunks are index sets gathered one at a time, not slices of a reordered copy: the cached
    # features are the bulk of memory (GBs for an LLM), and a second full copy would double it.
    order = torch.argsort(states.item, stable=True)
    bounds = [order[b] for b in trajectory_chunks(states.item[order], n_items, cfg.chunk_states)]
    kl = ref.regulariser == "kl" and cfg.beta > 0
    old = torch.empty(len(states), device=states.item.device)
    weight = step_weights(states.item, n_items, cfg.step_aggregation)
    ref_traj = per_item_sum(states.ref_logp, states.item, n_items)
    stats = UpdateStats()
    n_inner = cfg.inner_steps if lrs is None else len(lrs)
    for inner in range(n_inner):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[inner]
        opt.zero_grad(set_to_none=True)
        total, clipped, reg_value, ent, agree = 0.0, 0.0, 0.0, 0.0, 0.0
        for k, idx in enumerate(bounds):
            s = states.take(idx)
            logp_all = net.log_probs(inputs_on(net, s.inputs), cfg.temperature)
            new = logp_all.gather(1, s.action[:, None]).squeeze(1)
            if inner == 0:
                old[idx] = new.detach()
            ratio = torch.exp(new - old[idx])
            a = adv[s.item]
            surrogate = torch.min(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
            loss = -(surrogate * weight[idx]).sum()
            if ref.regulariser == "ce" and cfg.beta > 0:
                ce = -logp_all.gather(1, s.ref_choice[:, None]).squeeze(1)
                loss = loss + cfg.beta * (ce * weight[idx]).sum()
                reg_value += float((ce.detach() * weight[idx]).sum())
            elif kl:
                # Score-function KL estimator: w (1 + log g(tau) - log g_ref(tau)) grad log g(tau),
                # with w = clip(g(tau) / g_old(tau), 0.5, 2) computed without gradient. The chunk
                # holds whole trajectories, so its own pass gives log g(tau); at the first inner
                # step new = old and w = 1 exactly. grad log g(tau) is a sum of per-step terms,
                # weighted like the policy gradient's (divided by the step count under "mean").
                new_traj = per_item_sum(new.detach(), s.item, n_items)
                old_traj = per_item_sum(old[idx], s.item, n_items)
                w = torch.exp(new_traj - old_traj).clamp(0.5, 2.0)
                kl_coef = w * (1 + new_traj - ref_traj)
                loss = loss + cfg.beta * (kl_coef[s.item] * new * weight[idx]).sum()
            loss.backward()
            total += float(loss.detach())
            clipped += float(((ratio - 1).abs() > cfg.clip_eps).float().sum())
            if inner == 0:
                p = logp_all.detach().exp()
                ent += float(-(p * logp_all.detach().masked_fill(~s.inputs.allowed, 0.0)).sum())
                if ref.policy is not None:
                    agree += float((logp_all.argmax(1) == s.ref_choice).float().sum())
                if k == 0:
                    stats.ratio_first = float(ratio.detach().max())
        sync(net)
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if inner == 0:
            stats.loss = total
            stats.entropy = ent / max(len(states), 1)  # no states: every step was gated
            stats.agreement = agree / max(len(states), 1)
            if ref.regulariser == "kl":
                # KL(g_old || g_ref) estimate
                reg_value = float((per_item_sum(old, states.item, n_items) - ref_traj).mean())
            stats.reg = reg_value
        stats.clip_frac += clipped / max(len(states), 1) / n_inner
    return stats


def load_split(task, path: str, what: str):
    if hasattr(task, "bind"):  # a text task: its loader says what to download when missing
        return task.load(path)
    if not Path(path).is_file():
        raise UpoError(f"{path}: {what} file not found (make it with `upo data make`)")
    return task.load(path)


def evaluate_on(mdm, task, batch, policy):
    """Text tasks decode on the MDM's device with their blocks; the others as `upo eval` does."""
    if hasattr(task, "evaluate"):
        return task.evaluate(mdm, batch, policy)
    return evaluate_policy(mdm, task, batch, policy)


def build_policy(cfg: UPOConfig, mdm, ref: Reference) -> PolicyNet:
    if cfg.init == "pretrained":
        net = load_policy(cfg.pretrained, mdm)
        if ref.restrict_topk != net.cfg.restrict_topk:
            net = PolicyNet(
                PolicyConfig(**{**to_dict(net.cfg), "restrict_topk": ref.restrict_topk})
            )
            load_weights(net, Path(cfg.pretrained) / "model.safetensors")
        return net
    fields = {**cfg.policy, "feature_dim": mdm.feature_dim, "restrict_topk": ref.restrict_topk}
    return PolicyNet(from_dict(PolicyConfig, fields, "config: policy"))


def train_upo(
    cfg: UPOConfig,
    out_dir: str | Path,
    resume: bool = False,
    command: str = "",
    report_to: str | None = None,
) -> dict:
    out_dir = Path(out_dir)
    dist = Distributed()
    check_prompt_split(cfg.prompts_per_step, dist.world)
    torch.set_num_threads(cfg.threads)
    task = get_task(cfg.task, cfg.task_options or None)
    options = dict(cfg.mdm_options)
    if options.get("device") == "cuda" and dist.world > 1:
        options["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    mdm = load_mdm(cfg.mdm, options=options or None)
    if hasattr(task, "bind"):
        task = task.bind(mdm)  # text tasks speak the MDM's tokenizer
    device = mdm.device
    check_mdm_task(cfg.mdm, cfg.task)
    ref = make_reference(cfg.reference)
    torch.manual_seed(cfg.seed)
    net = build_policy(cfg, mdm, ref).to(device)
    net.train()
    opt = torch.optim.AdamW(
        net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas)
    )
    train = load_split(task, cfg.train_data, "training data")
    if len(train) < cfg.prompts_per_step:
        raise UpoError(
            f"{cfg.train_data}: has {len(train)} items, prompts_per_step is {cfg.prompts_per_step}"
        )
    # A round decodes prompts of different lengths together: with a model whose logits change
    # under left padding (see models/hf.py), the rollouts would not be the policy's own.
    if padding_safe_batch_size(mdm, 2) == 1 and not train.attention_mask.all():
        raise UpoError(
            f"{cfg.mdm}: left padding changes this model's logits and the training prompts "
            "differ in length; use a snapshot whose attention takes the padding mask, or set "
            "mdm_options allow_unpadded_batching: true to train on padded rollouts anyway"
        )
    val = load_split(task, cfg.val_data, "validation data") if cfg.val_data else None
    if val is not None and len(val) < cfg.val_n:
        raise UpoError(f"{cfg.val_data}: has {len(val)} items, val_n is {cfg.val_n}")
    val = val.select(np.arange(cfg.val_n)) if val is not None else None
    # Everything a run can be refused for is checked before prepare_run_dir creates --out.
    open_reporter = reporter_opener(report_to) if dist.main else None
    start = 0
    finished = prepare_run_dir(out_dir, cfg.run_config(), resume)
    if finished is not None:
        print(f"{out_dir}: training already complete ({finished.get('steps')} steps)")
        return finished
    if resume:
        was = checkpoint_json(out_dir, "config.json").get("mdm_fingerprint")
        if was != mdm.fingerprint():
            raise UpoError(
                f"{out_dir}: run was trained on MDM {was}, {cfg.mdm} is now {mdm.fingerprint()}"
            )
        load_weights(net, out_dir / "model.safetensors")
        state, _ = load_train_state(out_dir, opt)
        start = state["step"]
    dist.broadcast_params(net)
    fingerprint = mdm.fingerprint()
    log = (
        JsonlLog(out_dir / "metrics.jsonl", truncate_after_step=start if resume else 0)
        if dist.main
        else None
    )
    reporter = open_reporter(out_dir, cfg.run_config()) if open_reporter else None
    baseline = None
    if val is not None and dist.main:
        baseline = evaluate_on(mdm, task, val, make_rule("confidence")).solve_rate
    if dist.main:
        print(
            f"policy: {net.num_parameters():,} parameters; reference {ref.name} ({ref.regulariser}), "
            f"beta {cfg.beta}, init {cfg.init}",
            file=sys.stderr,
        )
    extra_meta = {"reference": ref.name, "init": cfg.init, "val_confidence_solve_rate": baseline}
    last_val: dict = {}

    def checkpoint(step: int, complete: bool):
        if not dist.main:
            return
        meta = {
            "kind": "policy",
            "task": cfg.task,
            "command": command,
            "commit": git_commit(),
            "steps": step,  # rollout rounds, the unit --resume counts in
            "optimizer_steps": cfg.optimizer_steps_before(step),
            "complete": complete,
            "mdm": cfg.mdm,
            "mdm_dtype": mdm.dtype_used,  # "auto" differs by CPU
            "train_data": cfg.train_data,
            "validation": last_val,
            **extra_meta,
        }
        train_state = {} if complete else {"optimizer": opt, "train_state": {"step": step}}
        save_policy(out_dir, net, fingerprint, meta, train_config=cfg.run_config(), **train_state)

    sampler = LearnedPolicy(net, mdm.mask_id, temperature=cfg.temperature, greedy=False)
    rounds = cfg.rollout_rounds
    bar = tqdm(
        range(start, rounds),
        initial=start,
        total=rounds,
        desc="upo train (rollout rounds)",
        file=sys.stderr,
        disable=not dist.main,
    )
    for step in bar:  # `step` counts rollout rounds
        first_opt = cfg.optimizer_steps_before(step)
        lrs = [cfg.lr_at(step, first_opt + i) for i in range(cfg.inner_steps_in(step))]
        rng = np.random.default_rng([cfg.seed, step])
        prompts = rng.choice(len(train), size=cfg.prompts_per_step, replace=False)
        prompts = prompts[dist.rank :: dist.world]
        items = np.repeat(prompts, cfg.group_size)
        batch = train.select(items).trimmed()
        gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + dist.rank)
        t0 = time.perf_counter()
        net.eval()
        traj, states = collect(
            mdm,
            torch.from_numpy(batch.tokens).to(device),
            sampler,
            ref.policy,
            ref.restrict_topk,
            gen,
            attention_mask=torch.from_numpy(batch.attention_mask).to(device),
            block_size=getattr(task, "block_length", None),
            certain_above=net.cfg.certain_above,
        )
        if net.cfg.certain_above is not None:
            # gated near-certain cells are not decisions: keep only the states that are
            states = states.take(is_decision(states.inputs))
        if cfg.feature_cache == "cpu":
            states.inputs.features = states.inputs.features.cpu()
        t_rollout = time.perf_counter() - t0
        outputs = traj.tokens.cpu().numpy()
        reward_np = (
            task.cell_acc(batch, outputs)
            if cfg.reward == "cell_acc"
            else task.solved(batch, outputs)
        )
        rewards = torch.from_numpy(reward_np).float()
        adv = group_advantages(rewards, cfg.group_size, cfg.scale_rewards)
        net.train()
        t1 = time.perf_counter()
        stats = update(net, opt, states, adv, ref, cfg, dist.sync_grads, lrs)
        t_update = time.perf_counter() - t1
        grouped = rewards.view(-1, cfg.group_size)
        record = {
            "step": step + 1,  # rollout round; metrics.jsonl is truncated by it on --resume
            "rollout_round": step + 1,
            "optimizer_step": cfg.optimizer_steps_before(step + 1),
            "reward_mean": dist.mean(float(rewards.mean())),
            "reward_std": dist.mean(float(rewards.std())),
            "solved_mean": dist.mean(float(task.solved(batch, outputs).mean())),
            "zero_var_groups": dist.mean(float((grouped.std(1) < 1e-9).float().mean())),
            "regulariser": dist.mean(stats.reg),
            "clip_frac": dist.mean(stats.clip_frac),
            "entropy": dist.mean(stats.entropy),
            "ref_agreement": dist.mean(stats.agreement),
            "loss": dist.mean(stats.loss),
            "first_ratio_max": stats.ratio_first,
            "states": len(states),
            "mdm_forwards": int(traj.nfe.sum()),
            "seconds_rollout": round(t_rollout, 3),
            "seconds_update": round(t_update, 3),
            "lr": lrs[-1],  # the rate of the round's last optimiser step
        }
        done = step + 1
        if val is not None and dist.main and (done % cfg.eval_every == 0 or done == rounds):
            net.eval()
            greedy = LearnedPolicy(net, mdm.mask_id, greedy=True)
            res = evaluate_on(mdm, task, val, greedy)
            last_val = {
                "val_solve_rate": res.solve_rate,
                "val_cell_acc": res.cell_acc,
                "val_confidence_solve_rate": baseline,
            }
            record.update(last_val)
            bar.write(f"step {done}: val solve {res.solve_rate:.3f} (confidence {baseline:.3f})")
        if dist.main:
            log.write(record)
            if reporter is not None:
                reporter.log(record, done)
            bar.set_postfix(
                r=f"{record['reward_mean']:.3f}",
                solved=f"{record['solved_mean']:.2f}",
                agree=f"{record['ref_agreement']:.2f}",
            )
        if done % cfg.checkpoint_every == 0 and done < rounds:
            checkpoint(done, complete=False)
        dist.barrier()
    sums = dist.checksums(net)
    extra_meta["replica_checksums"] = sums
    extra_meta["replicas_identical"] = len(set(sums)) == 1
    checkpoint(rounds, complete=True)
    dist.barrier()
    dist.close()
    if reporter is not None:
        reporter.close()
    return checkpoint_json(out_dir, "meta.json") if (out_dir / "meta.json").exists() else {}
