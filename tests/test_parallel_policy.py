"""Several positions per step: the parallel rules (threshold, eb) and the learned set policy."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from toy_denoiser import ConflictDenoiser
from upo.decode import unmask
from upo.policies.base import StepState
from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet
from upo.policies.resolve import resolve_policy
from upo.policies.rules import make_rule
from upo.policies.sets import greedy_set, sample_set, set_log_prob
from upo.rl.grpo import UPOConfig, group_advantages, update
from upo.rl.references import make_reference
from upo.rl.rollout import collect


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_heads(n: int, l: int, seed: int):
    gen = seeded(seed)
    allowed = torch.rand(n, l, generator=gen) < 0.8
    allowed[:, 0] = True
    scores = torch.randn(n, l, generator=gen) * 2
    first = torch.log_softmax(scores.masked_fill(~allowed, -1e30), dim=1).masked_fill(
        ~allowed, float("-inf")
    )
    keep = torch.randn(n, l, generator=gen) * 2
    return first, keep, allowed


def brute_force_probability(first, keep, allowed, subset) -> float:
    """P(S) from its definition: sum over the first position f in S of p(f) times the
    Bernoulli draws of every other allowed position."""
    s = torch.sigmoid(keep).tolist()
    p = first.exp().tolist()
    cells = [i for i in range(len(s)) if allowed[i]]
    total = 0.0
    for f in subset:
        term = p[f]
        for i in cells:
            if i != f:
                term *= s[i] if i in subset else 1 - s[i]
        total += term
    return total


def test_set_log_prob_is_its_definition_and_sums_to_one():
    first, keep, allowed = random_heads(3, 5, seed=0)
    for row in range(3):
        cells = allowed[row].nonzero().squeeze(1).tolist()
        subsets = [
            set(c) for r in range(1, len(cells) + 1) for c in itertools.combinations(cells, r)
        ]
        chosen = torch.zeros(len(subsets), 5, dtype=torch.bool)
        for j, subset in enumerate(subsets):
            chosen[j, list(subset)] = True
        n = len(subsets)
        logp = set_log_prob(
            first[row].expand(n, 5), keep[row].expand(n, 5), chosen, allowed[row].expand(n, 5)
        )
        for j, subset in enumerate(subsets):
            expected = brute_force_probability(first[row], keep[row], allowed[row], subset)
            assert math.isclose(float(logp[j].exp()), expected, rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(float(torch.logsumexp(logp, 0).exp()), 1.0, rel_tol=1e-5)


def test_sampled_sets_follow_their_log_probability():
    first, keep, allowed = random_heads(1, 4, seed=1)
    n = 40_000
    draws = sample_set(first.expand(n, 4), keep.expand(n, 4), allowed.expand(n, 4), seeded(2))
    assert not (draws & ~allowed).any() and draws.any(1).all()
    codes = (draws.long() * torch.tensor([1, 2, 4, 8])).sum(1)
    for code in codes.unique():
        subset = torch.tensor([(int(code) >> i) & 1 for i in range(4)], dtype=torch.bool)
        expected = float(set_log_prob(first, keep, subset[None], allowed).exp())
        observed = float((codes == code).float().mean())
        assert abs(observed - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3


def test_greedy_set_takes_the_best_first_and_the_likely_keeps():
    scores = torch.tensor([[0.1, 3.0, 0.2, 0.0]])
    keep = torch.tensor([[5.0, -5.0, -1.0, 0.5]])
    allowed = torch.tensor([[True, True, True, False]])
    assert greedy_set(scores, keep, allowed).tolist() == [[True, True, False, False]]


def state_from(logits: torch.Tensor) -> StepState:
    b, l, _ = logits.shape
    masked = torch.ones(b, l, dtype=torch.bool)
    return StepState(
        tokens=torch.zeros(b, l, dtype=torch.long),
        logits=logits,
        features=torch.zeros(b, l, 1),
        masked=masked,
        candidates=masked,
        block=masked,
        step=0,
    )


def test_entropy_bound_fills_confident_positions_while_their_entropy_fits():
    # positions by confidence: 2 (certain), 0 (sure), 1 (unsure), 3 (a coin flip)
    probs = torch.tensor([[[0.97, 0.03], [0.7, 0.3], [1.0 - 1e-6, 1e-6], [0.5, 0.5]]])
    state = state_from(probs.log())
    chosen = lambda bound: make_rule(f"eb:{bound}").select(state, 1).chosen.tolist()[0]  # noqa: E731
    assert chosen(0) == [False, False, True, False]  # always at least the most confident
    assert chosen(0.2) == [True, False, True, False]  # H(0.97) = 0.13 fits, H(0.7) = 0.61 not
    assert chosen(0.8) == [True, True, True, False]
    assert chosen(10) == [True, True, True, True]
    with pytest.raises(ValueError, match="entropy bound"):
        make_rule("eb:-1")


def set_net(feature_dim: int, keep_above: float = 0.9, seed: int = 0, **kw) -> PolicyNet:
    torch.manual_seed(seed)
    cfg = PolicyConfig(
        feature_dim=feature_dim,
        width=16,
        n_heads=2,
        mlp_hidden=32,
        confidence_skip=5.0,
        keep_above=keep_above,
        **kw,
    )
    return PolicyNet(cfg)


def test_untrained_set_policy_is_the_threshold_rule(mdm4, puzzles4):
    """keep_above anchors the keep head: before training, greedy set decoding is threshold:P."""
    puzzles, _ = puzzles4
    for p in (0.5, 0.9):
        net = set_net(mdm4.feature_dim, keep_above=p)
        learned = unmask(mdm4, puzzles, LearnedPolicy(net, mdm4.mask_id, greedy=True))
        rule = unmask(mdm4, puzzles, make_rule(f"threshold:{p}"))
        assert torch.equal(learned.tokens, rule.tokens) and torch.equal(learned.order, rule.order)
        assert torch.equal(learned.nfe, rule.nfe)


def test_set_policy_batched_equals_one_by_one(mdm4, puzzles4):
    puzzles, _ = puzzles4
    net = set_net(mdm4.feature_dim, keep_above=0.8, seed=3)
    with torch.no_grad():  # a policy that is not the threshold rule any more
        net.keep_mlp[-1].weight.normal_(0, 1.0, generator=seeded(4))
    policy = LearnedPolicy(net, mdm4.mask_id, greedy=True)
    batched = unmask(mdm4, puzzles, policy)
    rows = [unmask(mdm4, puzzles[i : i + 1], policy) for i in range(len(puzzles))]
    for i, row in enumerate(rows):
        assert torch.equal(batched.tokens[i], row.tokens[0])
        assert torch.equal(batched.order[i], row.order[0])
        assert torch.equal(batched.nfe[i], row.nfe[0])
    assert (batched.nfe < (puzzles == mdm4.mask_id).sum(1)).any()  # several per step somewhere


def test_rollout_log_probs_are_what_the_update_recomputes(mdm4, puzzles4):
    puzzles, _ = puzzles4
    net = set_net(mdm4.feature_dim, keep_above=0.8, seed=5)
    sampler = LearnedPolicy(net, mdm4.mask_id, temperature=0.7, greedy=False)
    ref = make_reference("threshold:0.8")
    traj, states = collect(mdm4, puzzles, sampler, ref.policy, None, seeded(0), sets=True)
    assert states.chosen_set is not None and states.ref_set is not None
    again = net.set_log_probs(states.inputs, states.chosen_set, 0.7)
    torch.testing.assert_close(again, states.sample_logp, atol=1e-4, rtol=1e-4)
    # every filled position is in exactly one recorded set of its item
    filled = torch.zeros_like(puzzles, dtype=torch.long).index_add_(
        0, states.item, states.chosen_set.long()
    )
    assert torch.equal(filled, (puzzles == mdm4.mask_id).long())
    assert torch.equal(traj.nfe, torch.bincount(states.item, minlength=len(puzzles)))


@pytest.mark.numerics
def test_learned_sets_avoid_filling_conflicting_positions_together():
    """On ConflictDenoiser, threshold fills every position in one step and gets half wrong; GRPO
    with a price per MDM call teaches the set policy to fill the a's first and the b's after."""
    mdm = ConflictDenoiser(n_pairs=3)
    rule = unmask(mdm, mdm.all_masked(1), make_rule("threshold:0.9"))
    assert rule.nfe.item() == 1 and mdm.reward(rule.tokens).item() == 0.5

    net = set_net(mdm.feature_dim, keep_above=0.9)
    group, prompts = 8, 4
    cfg = UPOConfig(
        init="random", reference="threshold:0.9", beta=0.0, group_size=group, inner_steps=2,
        temperature=1.0, lr=3e-3, nfe_cost=0.05,
    )  # fmt: skip
    cfg.validate()
    ref = make_reference(cfg.reference)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    sampler = LearnedPolicy(net, mdm.mask_id, temperature=1.0, greedy=False)
    gen = seeded(0)
    for _ in range(80):
        traj, states = collect(
            mdm, mdm.all_masked(group * prompts), sampler, ref.policy, None, gen, sets=True
        )
        rewards = mdm.reward(traj.tokens) - cfg.nfe_cost * traj.nfe.float()
        update(net, opt, states, group_advantages(rewards, group, False), ref, cfg, lambda n: n)

    learned = unmask(mdm, mdm.all_masked(1), LearnedPolicy(net, mdm.mask_id, greedy=True))
    assert mdm.reward(learned.tokens).item() == 1.0
    assert learned.nfe.item() <= 3  # parallel still: not one position per step (6 calls)
    a_steps, b_steps = learned.order[0, 0::2], learned.order[0, 1::2]
    assert (b_steps > a_steps).all()  # never a b before or with its a


def test_llada_parallel_recipe_trains_and_decodes_on_the_real_llada_code(tmp_path):
    """configs/llada-gsm8k-parallel.yaml, shrunk to CPU size, on the toy-size real LLaDA code:
    a set policy trains through GRPO on GSM8K-format prompts, then decodes several answer
    positions per step inside LLaDA's blocks."""
    from reference_models import model_dir
    from upo.config import load_config
    from upo.evaluate import evaluate_policy
    from upo.models.registry import load_mdm
    from upo.rl.grpo import train_upo
    from upo.tasks.registry import get_task

    model = model_dir("llada", tmp_path)
    root = Path(__file__).resolve().parents[1]
    data = str(root / "tests" / "fixtures" / "text" / "gsm8k.jsonl")
    cfg = load_config(
        UPOConfig,
        root / "configs" / "llada-gsm8k-parallel.yaml",
        {
            "mdm": f"hf:{model}",
            "mdm_options": {"trust_remote_code": True, "dtype": "float32", "device": "cpu"},
            "task_options": {"gen_length": 8, "block_length": 4, "chat": True},
            "train_data": data,
            "max_steps": 2,
            "prompts_per_step": 2,
            "group_size": 2,
            "inner_steps": 1,
            "warmup_steps": 1,
            "threads": 1,
            "policy": {"width": 16, "n_heads": 2, "mlp_hidden": 16, "confidence_skip": 20.0,
                       "keep_above": 0.9},
        },
    )  # fmt: skip
    assert cfg.reference == "threshold:0.9" and cfg.nfe_cost > 0
    meta = train_upo(cfg, tmp_path / "policy")
    assert meta["complete"] and meta["optimizer_steps"] == 2

    mdm = load_mdm(f"hf:{model}", options={"trust_remote_code": True, "dtype": "float32"})
    task = get_task("gsm8k", {"gen_length": 8, "block_length": 4}).bind(mdm)
    batch = task.load(data)
    policy = resolve_policy(str(tmp_path / "policy"), mdm)
    learned = evaluate_policy(mdm, task, batch, policy, batch_size=4)
    one_by_one = evaluate_policy(mdm, task, batch, make_rule("confidence"), batch_size=4)
    assert one_by_one.nfe == 8  # one position per step: gen_length calls
    assert learned.nfe < one_by_one.nfe  # sets: fewer calls
    # every answer position is filled, inside the blocks, whatever the set sizes
    assert (learned.order[:, -8:] >= 0).all()
    blocks = learned.order[:, -8:].reshape(len(batch), 2, 4)
    assert (blocks[:, 0].max(1) < blocks[:, 1].min(1)).all()
