"""`upo policy train`: UPO, i.e. GRPO over unmasking orders, kept near a reference rule.

One rollout round:
 1. rollout: P prompts x G samples decoded together in one batched call with the current policy,
    positions sampled at `temperature`; every visited state is recorded (MDM features cached in
    bf16), so the update phase runs zero MDM forwards;
 2. rewards per trajectory (fraction of blanks right, or solved), advantages r - mean_group(r);
 3. `inner_steps` optimiser steps on the cached states: clipped ratio objective per unmasking
    step plus beta times the regulariser (cross-entropy to one-hot references, the clipped-weight
    score-function KL estimator to stochastic ones). Where the UPO authors' code computes these
    differently (the loss's temperature, a log-ratio clamp, the CE target's ties, the std-scaling
    rule) UPOConfig has an option, upo's way by default: loss_options.py, docs/paper-recipe.md.
    The advantages, ratios and per-chunk loss are the objective's (objectives.py), which
    UPOConfig.objective names.

Budgets count as in TRL's GRPOTrainer, which the paper used: `max_steps` counts optimiser steps,
and a rollout batch serves `inner_steps` (TRL's num_iterations) of them. The older `steps` counts
rollout rounds.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from ..cache import check_cacheable
from ..checkpoint import load_weights
from ..config import from_dict, to_dict
from ..decode import Trajectory
from ..errors import UpoError
from ..evaluate import evaluate_policy
from ..models.denoiser import Denoiser
from ..models.registry import check_mdm_task, load_mdm
from ..policies.base import NEG_INF, masked_log_softmax
from ..policies.learned import (
    LearnedPolicy,
    PolicyConfig,
    PolicyInputs,
    PolicyNet,
    is_decision,
    load_policy,
    mdm_meta,
    policy_checkpoint_config,
    policy_dtype,
)
from ..policies.rules import make_rule
from ..policies.sets import greedy_set, set_log_prob
from ..tasks.base import Batch
from ..tasks.registry import get_task
from ..training.distributed import Distributed, check_prompt_split
from ..training.reporting import reporter_opener
from ..training.run import Run
from .grpo_config import DEFAULT_ROUNDS, UPOConfig
from .loss_options import advantages, ce_to_ties, mdm_torch_dtype, tied_top
from .objectives import Chunk, UPOObjective, make_objective, per_item_sum
from .references import Reference, make_reference
from .rollout import States, collect

if TYPE_CHECKING:
    from ..tasks.base import Task

__all__ = ["DEFAULT_ROUNDS", "UPOConfig", "train_upo", "update"]


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale: bool,
    eps: float = 1e-6,
    zero_flat: bool = False,
) -> torch.Tensor:
    """A = r - mean over the group of samples of the same prompt (optionally / (group std + eps),
    flat groups set to 0 with `zero_flat`: see loss_options.advantages)."""
    return advantages(rewards, group_size, scale, eps, zero_flat)


def inputs_on(net, inputs: PolicyInputs) -> PolicyInputs:
    """The policy inputs with their features on the network's device (feature_cache: cpu)."""
    device = next(net.parameters()).device
    if inputs.features.device == device:
        return inputs
    return dataclasses.replace(inputs, features=inputs.features.to(device, non_blocking=True))


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


def chunk_log_probs(
    net: PolicyNet, s: States, temperature: float, ref: Reference
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward pass over a chunk of states: (first-position log-probs [N, L], log-prob of what
    was done [N], -log-prob of the reference's choice [N] when it regularises by cross-entropy,
    [N] whether the greedy policy does what the reference does). A set policy's log-probs are
    of the whole set filled (upo.policies.sets)."""
    inp = inputs_on(net, s.inputs)
    ce = ref.regulariser == "ce"
    if s.chosen_set is None:
        logp_all = net.log_probs(inp, temperature)
        new = logp_all.gather(1, s.action[:, None]).squeeze(1)
        ref_nll = None
        if ce and s.ref_ties is not None:  # ce_ties: model-dtype
            ref_nll = ce_to_ties(logp_all, s.ref_ties)
        elif ce:
            ref_nll = -logp_all.gather(1, s.ref_choice[:, None]).squeeze(1)
        agree = logp_all.argmax(1) == s.ref_choice
        return logp_all, new, ref_nll, agree
    scores, keep = net.heads(inp)
    logp_all = masked_log_softmax(scores / temperature, inp.allowed)
    keep = keep / temperature
    new = set_log_prob(logp_all, keep, s.chosen_set, inp.allowed)
    ref_nll = -set_log_prob(logp_all, keep, s.ref_set, inp.allowed) if ce else None
    greedy = greedy_set(scores.masked_fill(~inp.allowed, NEG_INF), keep, inp.allowed)
    agree = (greedy == s.ref_set).all(1) if s.ref_set is not None else torch.zeros_like(new) > 0
    return logp_all, new, ref_nll, agree


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
    objective = make_objective(cfg, ref)
    n_items = len(adv)
    adv = adv.to(states.item.device)
    # Chunks are index sets gathered one at a time, not slices of a reordered copy: the cached
    # features are the bulk of memory (GBs for an LLM), and a second full copy would double it.
    order = torch.argsort(states.item, stable=True)
    bounds = [order[b] for b in trajectory_chunks(states.item[order], n_items, cfg.chunk_states)]
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
            logp_all, new, ref_nll, agrees = chunk_log_probs(net, s, cfg.loss_temperature, ref)
            if inner == 0:
                old[idx] = new.detach()
            ratio = objective.ratio(new, old[idx])
            chunk = Chunk(s.item, new, old[idx], ratio, weight[idx], ref_nll)
            loss, reg = objective.loss(chunk, adv, ref_traj)
            reg_value += reg
            loss.backward()
            total += float(loss.detach())
            clipped += float(((ratio - 1).abs() > cfg.clip_eps).float().sum())
            if inner == 0:
                p = logp_all.detach().exp()
                ent += float(-(p * logp_all.detach().masked_fill(~s.inputs.allowed, 0.0)).sum())
                if ref.policy is not None:
                    agree += float(agrees.float().sum())
                if k == 0:
                    stats.ratio_first = float(ratio.detach().max())
        sync(net)
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if inner == 0:
            stats.loss = total
            stats.entropy = ent / max(len(states), 1)  # no states: every step was gated
            stats.agreement = agree / max(len(states), 1)
            stats.reg = objective.regulariser_value(reg_value, old, states.item, ref_traj)
        stats.clip_frac += clipped / max(len(states), 1) / n_inner
    return stats


def build_policy(cfg: UPOConfig, mdm: Denoiser, ref: Reference) -> PolicyNet:
    """The policy to train, in the MDM's precision (`policy_dtype`)."""
    bf16 = policy_dtype(mdm) == "bfloat16"
    if cfg.init == "pretrained":
        net = load_policy(cfg.pretrained, mdm)
        if ref.restrict_topk != net.cfg.restrict_topk:
            net = PolicyNet(
                PolicyConfig(**{**to_dict(net.cfg), "restrict_topk": ref.restrict_topk}),
                bf16,
                mdm=mdm,
            )
            load_weights(net, Path(cfg.pretrained) / "model.safetensors")
        return net
    fields = {**cfg.policy, "feature_dim": mdm.feature_dim, "restrict_topk": ref.restrict_topk}
    return PolicyNet(from_dict(PolicyConfig, fields, "config: policy"), bf16, mdm=mdm)


@dataclass
class Setting:
    """Everything a UPO run reads, loaded and checked before OUT is touched."""

    mdm: Denoiser
    task: Task
    train: Batch
    val: Batch | None
    ref: Reference
    objective: UPOObjective
    net: PolicyNet
    dist: Distributed


def load_setting(cfg: UPOConfig) -> Setting:
    dist = Distributed()
    check_prompt_split(cfg.prompts_per_step, dist.world)
    torch.set_num_threads(cfg.threads)
    options = dict(cfg.mdm_options)
    if options.get("device") == "cuda" and dist.world > 1:
        options["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    check_mdm_task(cfg.mdm, cfg.task)
    mdm = load_mdm(cfg.mdm, options=options or None)
    check_cacheable(mdm, cfg.rollout_cache)  # here, not at the first rollout: before OUT is touched
    task = get_task(cfg.task, cfg.task_options or None).bind(mdm)
    ref = make_reference(cfg.reference, mdm)
    objective = make_objective(cfg, ref)
    torch.manual_seed(cfg.seed)
    net = build_policy(cfg, mdm, ref).to(mdm.device)
    train = task.load(cfg.train_data)
    if len(train) < cfg.prompts_per_step:
        raise UpoError(
            f"{cfg.train_data}: has {len(train)} items, prompts_per_step is {cfg.prompts_per_step}"
        )
    # A round decodes prompts of different lengths together: with a model whose logits change
    # under left padding (see models/hf.py), the rollouts would not be the policy's own.
    if not mdm.pads_batches and not train.attention_mask.all():
        raise UpoError(
            f"{cfg.mdm}: left padding changes this model's logits and the training prompts "
            "differ in length; use a snapshot whose attention takes the padding mask, or set "
            "mdm_options allow_unpadded_batching: true to train on padded rollouts anyway"
        )
    val = task.load(cfg.val_data) if cfg.val_data else None
    if val is not None and len(val) < cfg.val_n:
        raise UpoError(f"{cfg.val_data}: has {len(val)} items, val_n is {cfg.val_n}")
    val = val.select(np.arange(cfg.val_n)) if val is not None else None
    if net.chooses_sets and cfg.ce_ties == "model-dtype":
        raise UpoError(
            "ce_ties 'model-dtype' is a one-position target; a set policy (policy keep_above) "
            "needs ce_ties: argmax"
        )
    if net.chooses_sets and ref.regulariser == "kl":
        raise UpoError(
            f"reference {ref.name}: a set policy (policy keep_above) is regularised towards a "
            "deterministic rule's set; use threshold:P, eb:GAMMA, confidence or none"
        )
    return Setting(mdm, task, train, val, ref, objective, net, dist)


def rollout(s: Setting, cfg: UPOConfig, round_: int) -> tuple[Batch, Trajectory, States, float]:
    """Round `round_`'s prompts, each decoded group_size times by the sampling policy, with every
    visited state kept (features cached) for the update."""
    rng = np.random.default_rng([cfg.seed, round_])
    prompts = rng.choice(len(s.train), size=cfg.prompts_per_step, replace=False)
    prompts = prompts[s.dist.rank :: s.dist.world]
    batch = s.train.select(np.repeat(prompts, cfg.group_size)).trimmed()
    device = s.mdm.device
    gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)) + s.dist.rank)
    sampler = LearnedPolicy(s.net, s.mdm.mask_id, temperature=cfg.temperature, greedy=False)
    start = time.perf_counter()
    s.net.eval()
    traj, states = collect(
        s.mdm,
        torch.from_numpy(batch.tokens).to(device),
        sampler,
        s.ref.policy,
        s.ref.restrict_topk,
        gen,
        attention_mask=torch.from_numpy(batch.attention_mask).to(device),
        block_size=s.task.block_length,
        certain_above=s.net.cfg.certain_above,
        sets=s.net.chooses_sets,
        cache=cfg.rollout_cache,
    )
    if s.net.cfg.certain_above is not None:
        # gated near-certain cells are not decisions: keep only the states that are
        states = states.take(is_decision(states.inputs))
    if cfg.ce_ties == "model-dtype":
        # the authors' cross-entropy target: every position tied at the top once the top-1
        # probabilities are rounded as the MDM computes them
        dtype = mdm_torch_dtype(getattr(s.mdm, "dtype_used", None))
        states.ref_ties = tied_top(states.inputs.top_probs[..., 0], states.inputs.allowed, dtype)
    if cfg.feature_cache == "cpu":
        states.inputs.features = states.inputs.features.cpu()
    return batch, traj, states, time.perf_counter() - start


def confidence_baseline(s: Setting) -> float | None:
    """Max-confidence's solve rate on the validation items: what the run's validation is read
    against (None without validation, and on every process but the main one)."""
    if s.val is None or not s.dist.main:
        return None
    return evaluate_policy(s.mdm, s.task, s.val, make_rule("confidence")).solve_rate


def round_rewards(cfg: UPOConfig, task: Task, batch: Batch, traj: Trajectory) -> torch.Tensor:
    """Each rollout's reward: solved or partial credit, less nfe_cost per MDM call."""
    outputs = traj.tokens.cpu().numpy()
    reward_of = task.solved if cfg.reward == "solved" else task.partial_credit
    rewards = torch.from_numpy(reward_of(batch, outputs)).float()
    # each MDM call costs: one knob trades accuracy for speed (set policies)
    return rewards - cfg.nfe_cost * traj.nfe.cpu().float()


def round_record(
    cfg: UPOConfig,
    dist: Distributed,
    done: int,
    rewards: torch.Tensor,
    solved: np.ndarray,
    traj: Trajectory,
    states: States,
    stats: UpdateStats,
    seconds: tuple[float, float],
    lr: float,
) -> dict:
    """The metrics.jsonl line of rollout round `done` (counted from 1), averaged over the
    processes; `seconds`: (rollout, update)."""
    grouped = rewards.view(-1, cfg.group_size)
    return {
        "step": done,  # rollout round; metrics.jsonl is truncated by it on --resume
        "rollout_round": done,
        "optimizer_step": cfg.optimizer_steps_before(done),
        "reward_mean": dist.mean(float(rewards.mean())),
        "reward_std": dist.mean(float(rewards.std())),
        "solved_mean": dist.mean(float(solved.mean())),
        "zero_var_groups": dist.mean(float((grouped.std(1) < 1e-9).float().mean())),
        "regulariser": dist.mean(stats.reg),
        "clip_frac": dist.mean(stats.clip_frac),
        "entropy": dist.mean(stats.entropy),
        "ref_agreement": dist.mean(stats.agreement),
        "loss": dist.mean(stats.loss),
        "first_ratio_max": stats.ratio_first,
        "states": len(states),
        "mdm_forwards": int(traj.nfe.sum()),
        "seconds_rollout": round(seconds[0], 3),
        "seconds_update": round(seconds[1], 3),
        "lr": lr,
    }


def validation_fields(s: Setting, baseline: float | None) -> dict:
    """The greedy policy's figures on the validation items, beside max-confidence's solve rate:
    meta.json's "validation", and the fields a validating round adds to its record."""
    s.net.eval()
    res = evaluate_policy(s.mdm, s.task, s.val, LearnedPolicy(s.net, s.mdm.mask_id, greedy=True))
    return {
        "val_solve_rate": res.solve_rate,
        "val_cell_acc": res.partial_credit,
        "val_nfe": res.nfe,  # MDM calls per item: what a set policy saves
        "val_confidence_solve_rate": baseline,
    }


def upo_meta(cfg: UPOConfig, s: Setting, fingerprint: str, baseline: float | None) -> dict:
    """meta.json's own fields of a UPO checkpoint at the start of a run (Run.meta adds what every
    run's has); the loop updates optimizer_steps and validation."""
    return {
        "optimizer_steps": 0,
        **mdm_meta(cfg.mdm, s.mdm, fingerprint),
        "train_data": cfg.train_data,
        "validation": {},
        "reference": s.ref.name,
        "init": cfg.init,
        "val_confidence_solve_rate": baseline,
    }


def replica_fields(checksums: list[float]) -> dict:
    """The final meta's check that every process ended with the same policy."""
    return {"replica_checksums": checksums, "replicas_identical": len(set(checksums)) == 1}


def train_upo(
    cfg: UPOConfig,
    out_dir: str | Path,
    resume: bool = False,
    command: str = "",
    report_to: str | None = None,
) -> dict:
    """A UPO run: rollout rounds of rollout -> reward -> advantage -> update, with periodic
    validation and checkpoints; `resume` continues an interrupted run exactly."""
    s = load_setting(cfg)
    mdm, task, net, dist = s.mdm, s.task, s.net, s.dist
    opt = torch.optim.AdamW(
        net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas)
    )
    fingerprint = mdm.fingerprint()
    config = policy_checkpoint_config(net, fingerprint, cfg.run_config())
    run = Run(out_dir, kind="policy", task=cfg.task, command=command, config=config, main=dist.main)
    # Everything a run can be refused for is checked before run.prepare creates OUT.
    open_reporter = reporter_opener(report_to) if dist.main else None
    if (finished := run.prepare(resume)) is not None:
        return finished
    if resume:
        was = run.saved("config.json").get("mdm_fingerprint")
        if was != fingerprint:
            raise UpoError(
                f"{out_dir}: run was trained on MDM {was}, {cfg.mdm} is now {fingerprint}"
            )
        run.restore(net, opt)
        run.note_dtype("mdm_dtype", mdm.dtype_used)
        run.note_dtype("policy_dtype", policy_dtype(mdm))
    dist.broadcast_params(net)
    net.train()
    run.open_log()
    reporter = open_reporter(run.out_dir, cfg.run_config()) if open_reporter else None
    baseline = confidence_baseline(s)
    if dist.main:
        print(
            f"policy: {net.num_parameters():,} parameters; reference {s.ref.name} "
            f"({s.ref.regulariser}), beta {cfg.beta}, init {cfg.init}",
            file=sys.stderr,
        )
    meta = upo_meta(cfg, s, fingerprint, baseline)
    rounds = cfg.rollout_rounds
    bar = tqdm(
        range(run.step, rounds),
        initial=run.step,
        total=rounds,
        desc="upo train (rollout rounds)",
        file=sys.stderr,
        disable=not dist.main,
    )
    for round_ in bar:  # run.step and "step" in the log count rollout rounds
        batch, traj, states, t_rollout = rollout(s, cfg, round_)
        rewards = round_rewards(cfg, task, batch, traj)
        adv = s.objective.advantages(rewards)
        first_opt = cfg.optimizer_steps_before(round_)
        lrs = [cfg.lr_at(round_, first_opt + i) for i in range(cfg.inner_steps_in(round_))]
        net.train()
        t_update = time.perf_counter()
        stats = update(net, opt, states, adv, s.ref, cfg, dist.sync_grads, lrs)
        t_update = time.perf_counter() - t_update

        done = round_ + 1
        solved = task.solved(batch, traj.tokens.cpu().numpy())
        # lrs[-1]: the rate of the round's last optimiser step
        record = round_record(
            cfg, dist, done, rewards, solved, traj, states, stats, (t_rollout, t_update), lrs[-1]
        )
        if s.val is not None and dist.main and (done % cfg.eval_every == 0 or done == rounds):
            meta["validation"] = validation_fields(s, baseline)
            record.update(meta["validation"])
            val_solve = meta["validation"]["val_solve_rate"]
            bar.write(f"step {done}: val solve {val_solve:.3f} (confidence {baseline:.3f})")
        run.write(record)
        if reporter is not None:
            reporter.log(record, done)
        bar.set_postfix(
            r=f"{record['reward_mean']:.3f}",
            solved=f"{record['solved_mean']:.2f}",
            agree=f"{record['ref_agreement']:.2f}",
        )
        if done % cfg.checkpoint_every == 0 and done < rounds:
            meta["optimizer_steps"] = cfg.optimizer_steps_before(done)
            run.save(net, done, False, meta, opt)
        dist.barrier()

    meta.update(optimizer_steps=cfg.optimizer_steps, **replica_fields(dist.checksums(net)))
    final = run.save(net, rounds, True, meta)
    dist.barrier()
    dist.close()
    if reporter is not None:
        reporter.close()
    return final
