"""`upo policy pretrain`: imitation of the reference rule before RL.

Decode training puzzles with the reference, record every visited state, and fit the policy with
cross-entropy towards the reference's distribution over positions (one-hot for deterministic rules,
i.e. "the reference's choice"; the full softmax for softmax references). Top-1 agreement with the
reference is reported on states from held-out puzzles.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import git_commit
from ..config import from_dict, to_dict
from ..errors import UpoError
from ..io_utils import JsonlLog
from ..models.registry import load_mdm
from ..policies.learned import PolicyConfig, PolicyNet, save_policy
from ..policies.rules import make_rule
from ..tasks.registry import get_task
from .grpo import chunks, load_split
from .rollout import States, collect


@dataclass
class PretrainConfig:
    task: str = "sudoku9"
    mdm: str = "checkpoints/sudoku9-mdm"
    train_data: str = "data/sudoku9-train.jsonl"
    reference: str = "confidence"  # any hand rule; its distribution is the target
    decode_with: str | None = None  # rule that visits the states (default: the reference)
    policy: dict = field(default_factory=dict)  # PolicyConfig fields (feature_dim from the MDM)
    n_puzzles: int = 400
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


def visit_states(mdm, tokens: np.ndarray, decode_rule, reference, seed: int) -> States:
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for idx in chunks(len(tokens), 128):
        _, states = collect(
            mdm,
            torch.from_numpy(tokens[idx.numpy()]),
            decode_rule,
            reference,
            None,
            gen,
            keep_ref_dist=True,
        )
        parts.append(states)
    return concat_states(parts)


def concat_states(parts: list[States]) -> States:
    from ..policies.learned import PolicyInputs

    def cat(get):
        return torch.cat([get(p) for p in parts])

    return States(
        PolicyInputs(
            *(
                cat(lambda p, f=f: getattr(p.inputs, f))
                for f in ("features", "top_probs", "masked", "block", "allowed")
            )
        ),
        cat(lambda p: p.item),
        cat(lambda p: p.step),
        cat(lambda p: p.action),
        cat(lambda p: p.sample_logp),
        cat(lambda p: p.ref_choice),
        cat(lambda p: p.ref_logp),
        cat(lambda p: p.ref_dist),
    )


def soft_cross_entropy(logp: torch.Tensor, target_logp: torch.Tensor) -> torch.Tensor:
    """-sum_i g_ref(i) log g_phi(i) per state; positions outside the target's support contribute 0."""
    target = target_logp.exp()
    return -(target * logp.masked_fill(target == 0, 0.0)).sum(-1)


@torch.no_grad()
def agreement(net: PolicyNet, states: States) -> tuple[float, float]:
    """(top-1 agreement with the reference's choice, mean cross-entropy) on `states`."""
    agree, ce = 0.0, 0.0
    for idx in chunks(len(states), 1024):
        s = states.take(idx)
        logp = net.log_probs(s.inputs)
        agree += float((logp.argmax(1) == s.ref_choice).sum())
        ce += float(soft_cross_entropy(logp, s.ref_dist).sum())
    return agree / len(states), ce / len(states)


def pretrain_policy(cfg: PretrainConfig, out_dir: str | Path, command: str = "") -> dict:
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").exists():
        raise UpoError(f"{out_dir}: already holds a checkpoint; choose another --out")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    task = get_task(cfg.task)
    mdm = load_mdm(cfg.mdm)
    data = load_split(task, cfg.train_data, "training data")
    if len(data) < cfg.n_puzzles + cfg.held_out:
        raise UpoError(
            f"{cfg.train_data}: has {len(data)} puzzles, need n_puzzles + held_out = {cfg.n_puzzles + cfg.held_out}"
        )
    try:
        reference = make_rule(cfg.reference)
        decode_rule = make_rule(cfg.decode_with or cfg.reference)
    except ValueError as err:
        raise UpoError(str(err)) from None
    t0 = time.perf_counter()
    train_states = visit_states(mdm, data.tokens[: cfg.n_puzzles], decode_rule, reference, cfg.seed)
    held_states = visit_states(
        mdm,
        data.tokens[cfg.n_puzzles : cfg.n_puzzles + cfg.held_out],
        decode_rule,
        reference,
        cfg.seed + 1,
    )
    t_collect = time.perf_counter() - t0
    net = PolicyNet(
        from_dict(PolicyConfig, {**cfg.policy, "feature_dim": mdm.feature_dim}, "config: policy")
    )
    print(
        f"policy: {net.num_parameters():,} parameters; {len(train_states)} training states, "
        f"{len(held_states)} held-out states ({t_collect:.0f}s to collect)",
        file=sys.stderr,
    )
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log = JsonlLog(out_dir.parent / f"{out_dir.name}.metrics.jsonl", truncate_after_step=0)
    gen = torch.Generator().manual_seed(cfg.seed)
    total_steps = cfg.epochs * ((len(train_states) + cfg.batch_states - 1) // cfg.batch_states)
    bar = tqdm(total=total_steps, desc="policy pretrain", file=sys.stderr)
    step = 0
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(train_states), generator=gen)
        for start in range(0, len(perm), cfg.batch_states):
            s = train_states.take(perm[start : start + cfg.batch_states])
            lr = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / total_steps))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = soft_cross_entropy(net.log_probs(s.inputs), s.ref_dist).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        net.eval()
        agree, ce = agreement(net, held_states)
        log.write(
            {
                "step": step,
                "epoch": epoch + 1,
                "train_loss": loss.item(),
                "held_out_agreement": agree,
                "held_out_ce": ce,
            }
        )
        bar.write(
            f"epoch {epoch + 1}: held-out top-1 agreement with {cfg.reference} {agree:.3f}, CE {ce:.3f}"
        )
    bar.close()
    meta = {
        "kind": "policy",
        "task": cfg.task,
        "command": command,
        "commit": git_commit(),
        "pretrained_on": cfg.reference,
        "train_data": cfg.train_data,
        "mdm": cfg.mdm,
        "states": len(train_states),
        "held_out_agreement": agree,
        "held_out_ce": ce,
        "seconds": round(time.perf_counter() - t0, 1),
        "complete": True,
    }
    save_policy(out_dir, net, mdm.fingerprint(), meta, train_config=to_dict(cfg))
    return meta
