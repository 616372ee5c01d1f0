"""`upo policy pretrain`: imitation of the reference rule before RL.

Decode training items with the reference, record every visited state, and fit the policy with
cross-entropy towards the reference's distribution over positions (one-hot for deterministic rules,
i.e. "the reference's choice"; the full softmax for softmax references). Top-1 agreement with the
reference is reported on states from held-out items.

`target: correct` is the other objective: the answers of the training items say, at every visited
state, at which positions the MDM's argmax token is right, and the policy is fitted to put its mass
on those (-log of the probability of choosing any right position). Greedy decoding fails exactly
when it picks a position whose token is wrong, so this teaches the policy where the MDM's own
confidence misleads it. Reported: how often the policy's top choice is right on held-out states,
beside the same figure for the reference.

Hugging Face MDMs (LLaDA, Dream) pre-train on text tasks with fixed answer positions the same
way (`task_options` as for `upo policy train`; the UPO paper's max-confidence and softmax runs
start RL from such a head). Every visited state keeps its features: the prompt's length x the
MDM's width in bf16 per state (about 2.5 MB for sudoku4-paper on LLaDA-8B, so 400 puzzles of
about 10 blanks take some 10 GB of memory and of disk under OUT/visited while the run lasts).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import check_seed, from_dict, to_dict
from ..errors import UpoError
from ..io_utils import file_digest
from ..models.denoiser import Denoiser
from ..models.registry import check_mdm_task, is_hf_model, load_mdm
from ..policies.base import NEG_INF, Policy, masked_log_softmax, top_by_score
from ..policies.learned import (
    PolicyConfig,
    PolicyInputs,
    PolicyNet,
    is_decision,
    mdm_meta,
    policy_checkpoint_config,
    policy_dtype,
)
from ..policies.resolve import resolve_policy
from ..stored_chunks import stored_or_computed
from ..tasks.base import Batch
from ..tasks.registry import TEXT_TASK_NAMES, get_task
from ..training.run import Run, Stage
from .rollout import States, chunks, collect

VISITED = "visited"  # folder in OUT holding the visited states until the run is complete


@dataclass
class PretrainConfig:
    task: str = "sudoku9"
    mdm: str = "checkpoints/sudoku9-mdm"
    mdm_options: dict = field(default_factory=dict)  # upo's own MDM: {dtype: float32}, say
    task_options: dict = field(default_factory=dict)  # text tasks' settings, as policy train's
    train_data: str = "data/sudoku9-train.jsonl"
    # any policy name (docs/policies.md: a rule, the search, or a policy checkpoint of this MDM);
    # its distribution is the target
    reference: str = "confidence"
    # What visits the states (default: the reference): a hand rule, or a policy checkpoint of this
    # MDM, decoding greedily, so that a policy can be trained on the states its own order meets.
    # A list aggregates: each entry decodes the same items and all their states are kept (DAgger
    # with aggregation: list the previous rounds' policies). Kept in the product though only the
    # research runs use lists so far: imitation on the learner's own states is the standard cure
    # for compounding errors, for any task and reference.
    decode_with: str | list[str] | None = None
    # "reference": imitate the reference; "correct": choose positions the MDM fills rightly.
    # "correct" is the one pre-training that learns from the answers instead of a rule: it tells
    # whether one forward's features can separate right fills from wrong ones at all, the question
    # behind any learned order (on the built-in 9x9 MDM they barely can: experiments/README.md).
    target: str = "reference"
    # target "correct" only: weight of a per-position logistic loss (is the MDM's argmax right
    # here?) on every masked position, besides the loss on the choice itself; the dense variant of
    # the same question, for tasks where informative states are rare
    pointwise_weight: float = 0.0
    policy: dict = field(default_factory=dict)  # PolicyConfig fields (feature_dim from the MDM)
    n_puzzles: int = 400  # training items (the name predates the other tasks)
    held_out: int = 100
    epochs: int = 3
    batch_states: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2

    def validate(self) -> None:
        if self.n_puzzles < 1 or self.held_out < 1 or self.epochs < 1 or self.batch_states < 1:
            raise ValueError("n_puzzles, held_out, epochs and batch_states must be positive")
        if self.lr <= 0 or self.weight_decay < 0 or self.threads < 1:
            raise ValueError("need lr > 0, weight_decay >= 0 and threads >= 1")
        if self.target not in ("reference", "correct"):
            raise ValueError(f"target must be 'reference' or 'correct', got {self.target!r}")
        if self.pointwise_weight < 0 or (self.pointwise_weight > 0 and self.target != "correct"):
            raise ValueError("pointwise_weight must be >= 0 and is only used with target: correct")
        if isinstance(self.decode_with, list) and not self.decode_with:
            raise ValueError("decode_with: an empty list; name a rule or policy, or leave it out")
        check_seed(self.seed)


def informative(states: States) -> torch.Tensor:
    """[N] states where the choice matters for `target: correct`: some allowed position is right
    and some is wrong. Elsewhere the any-right loss is constant, so they are not kept."""
    right = states.correct & states.inputs.allowed
    return right.any(1) & (states.inputs.allowed & ~states.correct).any(1)


def visit_states(
    mdm: Denoiser,
    tokens: np.ndarray,
    decode_rule,
    reference,
    seed: int,
    answers: np.ndarray | None = None,
    only_informative: bool = False,
    certain_above: float | None = None,
    store_prefix: Path | None = None,
    attention_mask: np.ndarray | None = None,
    block_size: int | None = None,
) -> States:
    """States visited while `decode_rule` decodes `tokens`. With `certain_above` (the policy's
    gate) only the decisions are kept: at a gated state the network is never asked. With
    `store_prefix`, each chunk of 128 items is kept in STORE_PREFIX-cNNNN.safetensors and taken
    from there when a resumed run finds it. `attention_mask` (False at left padding) and
    `block_size` are a text task's. The decode runs on the MDM's device; the states are kept on
    the CPU (a Hugging Face MDM's features are too many for the GPU)."""
    device = mdm.device
    gen = torch.Generator(device=device).manual_seed(seed)
    parts = []
    for c, idx in enumerate(chunks(len(tokens), 128)):
        rows = idx.numpy()

        def visit_chunk(rows=rows) -> dict[str, torch.Tensor]:
            mask = None if attention_mask is None else torch.from_numpy(attention_mask[rows])
            _, states = collect(
                mdm,
                torch.from_numpy(tokens[rows]).to(device),
                decode_rule,
                reference,
                None,
                gen,
                keep_ref_dist=True,
                answers=None if answers is None else torch.from_numpy(answers[rows]).to(device),
                attention_mask=None if mask is None else mask.to(device),
                block_size=block_size,
                certain_above=certain_above,
            )
            if certain_above is not None:
                states = states.take(is_decision(states.inputs))
            if answers is not None:
                keep = informative(states) if only_informative else states.correct.any(1)
                states = states.take(keep)
            return {k: v.cpu() for k, v in states.to_tensors().items()}

        if store_prefix is None:
            tensors = visit_chunk()
        else:
            path = store_prefix.with_name(f"{store_prefix.name}-c{c:04d}.safetensors")
            tensors, _ = stored_or_computed(path, gen, visit_chunk)
        parts.append(States.from_tensors(tensors))
    return concat_states(parts)


def on_device(states: States, device: torch.device) -> States:
    """`states` with every tensor on `device` (the network's); the same object's tensors when
    they are there already."""
    return States.from_tensors({k: v.to(device) for k, v in states.to_tensors().items()})


def concat_states(parts: list[States]) -> States:
    """The states of several visits as one set, field by field (absent optional fields stay None)."""
    joined = {}
    for f in fields(States):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "inputs":
            joined[f.name] = PolicyInputs.cat(values)
        else:
            joined[f.name] = None if values[0] is None else torch.cat(values)
    return States(**joined)


def soft_cross_entropy(logp: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    """-sum_i g_ref(i) log g_phi(i) per state; positions outside the target's support contribute 0."""
    target = target_logp.exp()
    return -(target * logp.masked_fill(target == 0, 0.0)).sum(-1)


def any_correct_nll(logp: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """-log sum_{i right} g_phi(i) per state, over states where some allowed position is right
    (elsewhere every choice fails alike and there is nothing to learn)."""
    hit = torch.logsumexp(logp.masked_fill(~correct, NEG_INF), dim=-1)
    return -hit[hit > NEG_INF / 2]


@torch.no_grad()
def top1_correct(net: PolicyNet, states: States) -> tuple[float, float]:
    """(fraction of on-track states where the policy's top choice is right, same for the
    reference); a state is on track when nothing filled so far is wrong."""
    mine, ref, n = 0.0, 0.0, 0
    device = next(net.parameters()).device
    for idx in chunks(len(states), 1024):
        s = on_device(states.take(idx), device)
        on_track = s.correct.any(1)
        choice = net.log_probs(s.inputs).argmax(1)
        mine += float(s.correct.gather(1, choice[:, None])[on_track].sum())
        ref += float(s.correct.gather(1, s.ref_choice[:, None])[on_track].sum())
        n += int(on_track.sum())
    return mine / max(n, 1), ref / max(n, 1)


def pretrain_loss(cfg: PretrainConfig, net: PolicyNet, s: States) -> torch.Tensor:
    scores = net(s.inputs)
    logp = masked_log_softmax(scores, s.inputs.allowed)
    if cfg.target == "reference":
        return soft_cross_entropy(logp, s.ref_dist).mean()
    listwise = any_correct_nll(logp, s.correct & s.inputs.allowed)
    loss = listwise.sum() / max(len(listwise), 1)
    if cfg.pointwise_weight > 0:
        # Every still-masked position of an on-track state, chosen or not, is a labelled example
        # of "the MDM's argmax here is right": far more of them than of decisive choices, so what
        # makes a confident prediction wrong is learnt from many cases, not from the rare ones.
        where = s.inputs.masked & s.correct.any(1, keepdim=True)
        loss = loss + cfg.pointwise_weight * F.binary_cross_entropy_with_logits(
            scores[where], s.correct[where].float()
        )
    return loss


@torch.no_grad()
def agreement(net: PolicyNet, states: States) -> tuple[float, float, float]:
    """(top-1 agreement with the reference's choice, mean cross-entropy, max-confidence's top-1
    agreement with the reference's choice) on `states`. The last is the bar for a policy that
    starts as max-confidence: it has learned something only where it agrees more."""
    agree, ce, conf_agree = 0.0, 0.0, 0.0
    device = next(net.parameters()).device
    for idx in chunks(len(states), 1024):
        s = on_device(states.take(idx), device)
        logp = net.log_probs(s.inputs)
        agree += float((logp.argmax(1) == s.ref_choice).sum())
        ce += float(soft_cross_entropy(logp, s.ref_dist).sum())
        top1 = s.inputs.top_probs[..., 0].float()
        conf_choice = top_by_score(top1, s.inputs.allowed, 1).float().argmax(1)
        conf_agree += float((conf_choice == s.ref_choice).sum())
    n = len(states)
    return agree / n, ce / n, conf_agree / n


@dataclass
class PretrainSetting:
    """What a pre-training run works on, opened and checked before its run directory is touched."""

    mdm: Denoiser
    data: Batch  # the training file: n_puzzles items to train on, then held_out to report on
    block_size: int | None  # a text task's semi-autoregressive blocks (None: one block)
    reference: Policy  # its distribution over positions is the target
    decode_rules: list[Policy]  # what visits the states (cfg.decode_with; default the reference)
    policy_cfg: PolicyConfig
    provenance: dict  # what the visited states are made from: MDM fingerprint, data digest


def load_pretrain_setting(cfg: PretrainConfig) -> PretrainSetting:
    text = cfg.task in TEXT_TASK_NAMES
    if text and cfg.target == "correct":
        # text tasks' batches carry no answer tokens to compare the MDM's fills with
        raise UpoError(f"target correct needs a token task's answers; {cfg.task} has none")
    if text != is_hf_model(cfg.mdm):
        raise UpoError(
            f"task {cfg.task} is a {'text' if text else 'token'} task and {cfg.mdm} "
            f"{'is' if not text else 'is not'} a Hugging Face MDM: text tasks run on Hugging "
            "Face MDMs, token tasks on upo's own"
        )
    if cfg.task_options and not text:
        raise UpoError(f"task {cfg.task} takes no task_options")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = get_task(cfg.task, cfg.task_options or None)
    check_mdm_task(cfg.mdm, cfg.task)
    mdm = load_mdm(cfg.mdm, options=cfg.mdm_options or None)
    if text:
        task = task.bind(mdm)
    data = task.load(cfg.train_data)
    # Decoding prompts of different lengths together needs a model whose logits ignore left
    # padding (models/hf.py's probe), as in policy train.
    if not mdm.pads_batches and not data.attention_mask.all():
        raise UpoError(
            f"{cfg.mdm}: left padding changes this model's logits and the training prompts "
            "differ in length; use a snapshot whose attention takes the padding mask, or set "
            "mdm_options allow_unpadded_batching: true"
        )
    if len(data) < cfg.n_puzzles + cfg.held_out:
        raise UpoError(
            f"{cfg.train_data}: has {len(data)} items, need n_puzzles + held_out = {cfg.n_puzzles + cfg.held_out}"
        )
    reference = resolve_policy(cfg.reference, mdm)
    # rules are stateless, so the reference itself can visit the states
    if cfg.decode_with is None:
        decode_rules = [reference]
    else:
        names = [cfg.decode_with] if isinstance(cfg.decode_with, str) else cfg.decode_with
        decode_rules = [resolve_policy(name, mdm) for name in names]
    # built before the states are collected (minutes), so a bad policy setting fails at once
    policy_cfg = from_dict(
        PolicyConfig, {**cfg.policy, "feature_dim": mdm.feature_dim}, "config: policy"
    )
    provenance = {
        "mdm_fingerprint": mdm.fingerprint(),
        "train_data_digest": file_digest(cfg.train_data),
    }
    return PretrainSetting(
        mdm, data, task.block_length, reference, decode_rules, policy_cfg, provenance
    )


def visit_splits(cfg: PretrainConfig, s: PretrainSetting, visited: Path) -> tuple[States, States]:
    """(training states, held-out states): the states every decode rule visits on the training
    items and on the held-out ones, each chunk kept in `visited` (and taken from there)."""
    answers = s.data.answers if cfg.target == "correct" else None
    certain_above = s.policy_cfg.certain_above

    def visit(split: str, part: slice, seed: int, only_informative: bool = False) -> States:
        # visitor k gets seeds seed + 2k, so the first keeps the seeds of a single visitor
        return concat_states(
            [
                visit_states(
                    s.mdm,
                    s.data.tokens[part],
                    decode_rule,
                    s.reference,
                    seed + 2 * k,
                    None if answers is None else answers[part],
                    only_informative=only_informative,
                    certain_above=certain_above,
                    store_prefix=visited / f"{split}-v{k}",
                    attention_mask=s.data.attention_mask[part],
                    block_size=s.block_size,
                )
                for k, decode_rule in enumerate(s.decode_rules)
            ]
        )

    informative_only = cfg.target == "correct" and cfg.pointwise_weight == 0
    train_states = visit("train", slice(0, cfg.n_puzzles), cfg.seed, informative_only)
    held_states = visit("held", slice(cfg.n_puzzles, cfg.n_puzzles + cfg.held_out), cfg.seed + 1)
    return train_states, held_states


def train_epoch(
    cfg: PretrainConfig,
    net: PolicyNet,
    opt: torch.optim.Optimizer,
    states: States,
    gen: torch.Generator,
    step: int,
    total_steps: int,
    bar: tqdm,
) -> tuple[torch.Tensor, int]:
    """One pass over `states` in a random order, the learning rate on a cosine over all epochs;
    (the last batch's loss, the step count after it)."""
    net.train()
    perm = torch.randperm(len(states), generator=gen)
    device = next(net.parameters()).device
    for start in range(0, len(perm), cfg.batch_states):
        s = on_device(states.take(perm[start : start + cfg.batch_states]), device)
        lr = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / total_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = pretrain_loss(cfg, net, s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss, step


def epoch_record(
    cfg: PretrainConfig, net: PolicyNet, held_states: States, step: int, epoch: int, loss
) -> tuple[dict, str]:
    """(the metrics.jsonl line after `epoch`, measured on the held-out states; its summary)."""
    net.eval()
    agree, ce, conf_agree = agreement(net, held_states)
    record = {
        "step": step,
        "epoch": epoch + 1,
        "train_loss": loss.item(),
        "held_out_agreement": agree,
        "held_out_ce": ce,
        "confidence_agreement": conf_agree,
    }
    message = (
        f"held-out top-1 agreement with {cfg.reference} {agree:.3f} "
        f"(max-confidence {conf_agree:.3f}), CE {ce:.3f}"
    )
    if cfg.target == "correct":
        mine, ref = top1_correct(net, held_states)
        record.update(held_out_top1_correct=mine, reference_top1_correct=ref)
        message += f"; top choice right {mine:.4f} (reference {ref:.4f})"
    return record, message


def pretrain_meta(
    cfg: PretrainConfig, s: PretrainSetting, states: int, record: dict, seconds: float
) -> dict:
    """meta.json's own fields of a pre-training checkpoint (Run.meta adds what every run's has):
    the last epoch's held-out figures, and the seconds spent over every attempt."""
    return {
        "pretrained_on": cfg.reference if cfg.target == "reference" else "correct",
        "train_data": cfg.train_data,
        **mdm_meta(cfg.mdm, s.mdm, s.provenance["mdm_fingerprint"]),
        "states": states,
        **{k: v for k, v in record.items() if k not in ("step", "epoch", "train_loss")},
        "seconds": round(seconds, 1),
    }


def pretrain_policy(
    cfg: PretrainConfig, out_dir: str | Path, resume: bool = False, command: str = ""
) -> dict:
    """Visit the states, then fit the policy for `cfg.epochs` epochs. The visited states are kept
    in OUT/visited/ chunk by chunk and a checkpoint is written after every epoch, so `resume`
    continues an interrupted run where it stopped, with the result of an uninterrupted one."""
    s = load_pretrain_setting(cfg)
    train_config = to_dict(cfg)
    if not cfg.task_options:
        # added for text tasks: runs begun before it recorded no such key, and must resume
        del train_config["task_options"]
    # config.json is completed once the network exists (policy_checkpoint_config)
    run = Run(
        out_dir,
        kind="policy",
        task=cfg.task,
        command=command,
        config={"train": train_config},
        stage=Stage(VISITED, holds="the states", provenance=s.provenance),
        activity="pre-training",
    )
    if (finished := run.prepare(resume)) is not None:
        return finished
    t0 = time.perf_counter()
    train_states, held_states = visit_splits(cfg, s, run.open_stage())
    t_collect = time.perf_counter() - t0
    # The visits draw from their own generators, never from the global one seeded above, so a
    # resumed run whose states came from disk initialises the network as an uninterrupted one.
    net = PolicyNet(s.policy_cfg, bf16=policy_dtype(s.mdm) == "bfloat16", mdm=s.mdm)
    net.to(s.mdm.device)  # the MDM's device (upo's own MDMs: the CPU, as ever)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = (len(train_states) + cfg.batch_states - 1) // cfg.batch_states
    total_steps = cfg.epochs * steps_per_epoch
    run.config = policy_checkpoint_config(net, s.provenance["mdm_fingerprint"], train_config)
    run.restore(net, opt)  # after an interrupted epoch loop; a fresh run has nothing to restore
    if resume:
        run.note_dtype("mdm_dtype", s.mdm.dtype_used)
        run.note_dtype("policy_dtype", policy_dtype(s.mdm))
    if "generator_state" in run.extra:
        gen.set_state(run.extra["generator_state"])
    first_epoch = int(run.state.get("epoch", 0))
    seconds_before = float(run.state.get("seconds", 0.0))
    step = first_epoch * steps_per_epoch
    print(
        f"policy: {net.num_parameters():,} parameters; {len(train_states)} training states, "
        f"{len(held_states)} held-out states ({t_collect:.0f}s to collect)"
        + (f"; resuming after epoch {first_epoch}" if first_epoch else ""),
        file=sys.stderr,
    )
    run.step = step
    run.open_log()

    bar = tqdm(total=total_steps, initial=step, desc="policy pretrain", file=sys.stderr)
    for epoch in range(first_epoch, cfg.epochs):
        loss, step = train_epoch(cfg, net, opt, train_states, gen, step, total_steps, bar)
        record, message = epoch_record(cfg, net, held_states, step, epoch, loss)
        run.write(record)
        bar.write(f"epoch {epoch + 1}: {message}")
        seconds = seconds_before + time.perf_counter() - t0
        if epoch + 1 < cfg.epochs:
            meta = pretrain_meta(cfg, s, len(train_states), record, seconds)
            state = {"epoch": epoch + 1, "seconds": seconds}
            run.save(net, step, False, meta, opt, state, {"generator_state": gen.get_state()})
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    meta = pretrain_meta(cfg, s, len(train_states), record, seconds)
    return run.save(net, step, True, meta)  # drops the visited states
