"""The loss options that reproduce the UPO authors' code (issue 37), each checked against a value
computed by hand from its definition on a tiny case, and upo's defaults left as they were."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from upo.config import from_dict, load_config
from upo.errors import UpoError
from upo.policies.base import masked_log_softmax
from upo.policies.learned import PolicyInputs
from upo.rl.grpo import UPOConfig, chunk_log_probs, group_advantages, update
from upo.rl.grpo_config import LOSS_OPTION_DEFAULTS
from upo.rl.loss_options import ce_to_ties, policy_ratio, tied_top
from upo.rl.objectives import Chunk, make_objective
from upo.rl.references import make_reference
from upo.rl.rollout import States


class FixedScores(torch.nn.Module):
    """A policy whose scores are one learnable vector over L positions, whatever the state: the
    smallest net for which the loss's gradient can be written down by hand."""

    chooses_sets = False

    def __init__(self, scores: list[float]):
        super().__init__()
        self.s = torch.nn.Parameter(torch.tensor(scores))

    def log_probs(self, inp: PolicyInputs, temperature: float = 1.0) -> torch.Tensor:
        scores = self.s.expand(len(inp.allowed), -1)
        return masked_log_softmax(scores / temperature, inp.allowed)


def make_states(actions, items, ref_choice=None, allowed=None, top1=None) -> States:
    n, L = len(actions), 3
    allowed = torch.ones(n, L, dtype=torch.bool) if allowed is None else torch.tensor(allowed)
    top = torch.zeros(n, L, 8)
    if top1 is not None:
        top[..., 0] = torch.tensor(top1)
    inputs = PolicyInputs(
        features=torch.zeros(n, L, 1),
        top_probs=top,
        masked=allowed.clone(),
        block=torch.ones(n, L, dtype=torch.bool),
        allowed=allowed,
        board=torch.zeros(n, L, dtype=torch.long),
        valid=torch.ones(n, L, dtype=torch.bool),
    )
    return States(
        inputs=inputs,
        item=torch.tensor(items),
        step=torch.zeros(n, dtype=torch.long),
        action=torch.tensor(actions),
        sample_logp=torch.zeros(n),
        ref_choice=torch.tensor(ref_choice if ref_choice is not None else [-1] * n),
        ref_logp=torch.zeros(n),
        ref_dist=None,
    )


def cfg_with(**kw) -> UPOConfig:
    base = dict(
        init="random",
        reference="none",
        beta=0.0,
        group_size=2,
        inner_steps=1,
        temperature=0.8,
        step_aggregation="sum",
        grad_clip=1e9,  # the raw gradient is what is compared
    )
    return from_dict(UPOConfig, {**base, **kw}, "test")


def softmax(scores: list[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in scores]
    return [x / sum(e) for x in e]


# --- logprob_temperature --------------------------------------------------------------------


@pytest.mark.parametrize("logprob_temperature, used", [(None, 0.8), (1.0, 1.0)])
def test_logprob_temperature_sets_the_gradient_of_the_ratio(logprob_temperature, used):
    """Rollouts sampled at T = 0.8; the loss's log-probs at `used`. At the first inner step the
    ratio is 1 and its gradient is A w grad log g(a) = A w (e_a - p) / T, p = softmax(s / T)."""
    scores, actions, adv = [0.5, -0.2, 0.1], [0, 2], [0.3, -0.3]
    net = FixedScores(scores)
    cfg = cfg_with(logprob_temperature=logprob_temperature)
    update(
        net,
        torch.optim.SGD(net.parameters(), lr=0.0),
        make_states(actions, [0, 1]),
        torch.tensor(adv),
        make_reference("none"),
        cfg,
        lambda n: None,
    )
    p = softmax(scores, used)
    want = [0.0, 0.0, 0.0]
    for a, A in zip(actions, adv):
        for j in range(3):  # minus the surrogate, trajectories averaged (w = 1/2)
            want[j] -= A * 0.5 * ((j == a) - p[j]) / used
    assert net.s.grad.tolist() == pytest.approx(want, rel=1e-5)


def test_logprob_temperature_sets_the_cross_entropy():
    """The CE to the reference's choice is -log softmax(s / T_loss)[choice]."""
    scores = [0.5, -0.2, 0.1]
    s = make_states([0], [0], ref_choice=[1])
    for t in (0.8, 1.0):
        _, _, ref_nll, _ = chunk_log_probs(FixedScores(scores), s, t, make_reference("confidence"))
        assert float(ref_nll[0].detach()) == pytest.approx(
            -math.log(softmax(scores, t)[1]), rel=1e-6
        )


def test_loss_temperature_defaults_to_the_rollout_temperature():
    assert cfg_with().loss_temperature == 0.8
    assert cfg_with(logprob_temperature=1.0).loss_temperature == 1.0


# --- log_ratio_clamp ------------------------------------------------------------------------


def test_log_ratio_clamp_caps_the_ratio_before_exp():
    new, old = torch.tensor([12.0, -15.0, 0.5]), torch.zeros(3)
    assert policy_ratio(new, old, 10.0).tolist() == pytest.approx(
        [math.exp(10), math.exp(-10), math.exp(0.5)], rel=1e-6
    )
    assert policy_ratio(new, old, None).tolist() == pytest.approx(
        [math.exp(12), math.exp(-15), math.exp(0.5)], rel=1e-6
    )


@pytest.mark.parametrize("clamp", [None, 10.0])
def test_log_ratio_clamp_in_the_objective(clamp):
    """A negative advantage with log-ratio 12: the clipped objective keeps the unclipped term
    -A w r. Clamped, r = e^10 and no gradient flows; unclamped, r = e^12 and d/d new = -A w e^12."""
    s = make_states([0], [0])
    new = torch.tensor([12.0], requires_grad=True)
    old = torch.zeros(1)
    ratio = policy_ratio(new, old, clamp)
    cfg = cfg_with(log_ratio_clamp=clamp, group_size=2)
    adv, w = torch.tensor([-0.4]), torch.tensor([1.0])
    objective = make_objective(cfg, make_reference("none"))
    loss, _ = objective.loss(Chunk(s.item, new, old, ratio, w, None), adv, torch.zeros(1))
    loss.backward()
    r = math.exp(12 if clamp is None else 10)
    assert float(loss.detach()) == pytest.approx(0.4 * r, rel=1e-5)
    assert float(new.grad[0]) == pytest.approx(0.0 if clamp else 0.4 * r, rel=1e-5)


# --- ce_ties --------------------------------------------------------------------------------


def test_ties_are_taken_in_the_model_dtype():
    """bf16 just below 1 has steps of 2^-8: every p above 1 - 2^-9 (~0.998) rounds to 1.0, 0.9975
    to 1 - 2^-8. Position 3 (0.9999) is not allowed, so it is no candidate."""
    top1 = torch.tensor([[0.9995, 0.9985, 0.9975, 0.9999]])
    allowed = torch.tensor([[True, True, True, False]])
    assert tied_top(top1, allowed, torch.bfloat16).tolist() == [[True, True, False, False]]
    # in float32 only the argmax ties with itself: upo's one-hot target
    assert tied_top(top1, allowed, torch.float32).tolist() == [[True, False, False, False]]


def test_ce_to_ties_is_uniform_over_the_tied_positions():
    scores = [0.5, -0.2, 0.1]
    logp = masked_log_softmax(torch.tensor([scores]), torch.ones(1, 3, dtype=torch.bool))
    ties = torch.tensor([[True, True, False]])
    p = softmax(scores, 1.0)
    want = -(math.log(p[0]) + math.log(p[1])) / 2
    assert float(ce_to_ties(logp, ties)[0]) == pytest.approx(want, rel=1e-6)


def test_ce_ties_model_dtype_changes_the_update_cross_entropy():
    """Through the update's own path: a state with ref_ties uses the uniform target, one without
    the one-hot on ref_choice."""
    scores = [0.5, -0.2, 0.1]
    s = make_states([0], [0], ref_choice=[0], top1=[[0.9995, 0.9993, 0.5]])
    ref = make_reference("confidence")
    _, _, one_hot, _ = chunk_log_probs(FixedScores(scores), s, 1.0, ref)
    s.ref_ties = tied_top(s.inputs.top_probs[..., 0], s.inputs.allowed, torch.bfloat16)
    _, _, tied, _ = chunk_log_probs(FixedScores(scores), s, 1.0, ref)
    p = softmax(scores, 1.0)
    assert float(one_hot[0].detach()) == pytest.approx(-math.log(p[0]), rel=1e-6)
    assert float(tied[0].detach()) == pytest.approx(
        -(math.log(p[0]) + math.log(p[1])) / 2, rel=1e-6
    )


# --- std scaling ----------------------------------------------------------------------------

# Six equal rewards whose float32 mean rounds: r - mean is 2.98e-8, while std(1) of two or more
# such groups comes out exactly 0 (a one-row tensor takes another kernel and gives 3e-8).
FLAT = 0.2910364270210266


def test_authors_std_scaling_on_a_hand_case():
    """(r - mean) / (unbiased std + 1e-4), and a flat group exactly 0."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0] + [FLAT] * 6)
    adv = group_advantages(rewards, 6, True, eps=1e-4, zero_flat=True)
    mean, std = 1 / 6, math.sqrt((25 / 36 + 5 / 36) / 5)
    want = [(1 - mean) / (std + 1e-4)] + [-mean / (std + 1e-4)] * 5
    assert adv[:6].tolist() == pytest.approx(want, rel=1e-5)
    assert adv[6:].tolist() == [0.0] * 6


def test_upo_std_scaling_lets_a_rounding_residue_through():
    """upo's default (eps 1e-6, no zeroing) turns the mean's rounding residue in a flat group into
    an advantage of about 0.03 for every sample: the reason zero_std_groups exists."""
    rewards = torch.tensor([FLAT] * 12)
    r = rewards.view(2, 6)
    assert (r.std(1) == 0).all() and (r - r.mean(1, keepdim=True)).abs().min() > 0
    adv = group_advantages(rewards, 6, True)
    assert adv.abs().min() > 0.01
    assert torch.equal(
        adv, (r - r.mean(1, keepdim=True)).div(r.std(1, keepdim=True) + 1e-6).view(-1)
    )
    assert group_advantages(rewards, 6, True, eps=1e-6, zero_flat=True).abs().max() == 0


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"logprob_temperature": 0.0}, "logprob_temperature"),
        ({"log_ratio_clamp": -1.0}, "log_ratio_clamp"),
        ({"ce_ties": "bf16"}, "ce_ties"),
        ({"ce_ties": "model-dtype", "reference": "margin"}, "max-confidence"),
        ({"scale_rewards_eps": -1.0}, "scale_rewards_eps"),
        ({"zero_std_groups": "yes"}, "zero_std_groups"),
    ],
)
def test_bad_loss_options_are_refused_in_one_line(bad, says):
    with pytest.raises(UpoError) as err:
        cfg_with(**bad)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_defaults_are_left_out_of_the_run_record():
    """Run directories written before these options resume: at upo's defaults the recorded
    settings do not mention them; set, they are recorded."""
    assert not set(LOSS_OPTION_DEFAULTS) & set(cfg_with().run_config())
    paper = cfg_with(
        logprob_temperature=1.0,
        log_ratio_clamp=10.0,
        ce_ties="model-dtype",
        reference="confidence",
        scale_rewards_eps=1e-4,
        zero_std_groups=True,
    ).run_config()
    assert {k: paper[k] for k in LOSS_OPTION_DEFAULTS} == {
        "logprob_temperature": 1.0,
        "log_ratio_clamp": 10.0,
        "ce_ties": "model-dtype",
        "scale_rewards_eps": 1e-4,
        "zero_std_groups": True,
    }


def test_a_run_with_every_paper_loss_option(tmp_path, monkeypatch):
    """End to end on the tiny 4x4 MDM: the rollout records the ties, the update uses them."""
    from test_grpo import write_sudoku4_setup
    from upo.rl.grpo import train_upo

    config = write_sudoku4_setup(tmp_path)
    data = yaml.safe_load(config.read_text())
    data.update(
        steps=1,
        reference="confidence",
        beta=0.01,
        scale_rewards=True,
        logprob_temperature=1.0,
        log_ratio_clamp=10.0,
        ce_ties="model-dtype",
        scale_rewards_eps=1e-4,
        zero_std_groups=True,
    )
    config.write_text(yaml.safe_dump(data))
    import upo.rl.grpo as grpo

    seen = []
    real_update = grpo.update

    def spy(net, opt, states, *a, **kw):
        seen.append(states.ref_ties)
        return real_update(net, opt, states, *a, **kw)

    monkeypatch.setattr(grpo, "update", spy)
    meta = train_upo(load_config(UPOConfig, config), tmp_path / "policy")
    assert meta["complete"]
    ties = seen[0]
    assert ties is not None and ties.any(1).all()  # every state has a target


# --- the reward's space rule (sudoku4-paper) ------------------------------------------------

PUZZLE, SOLUTION = "1030041020030301", "1234341221434321"  # 8 blanks: cells 1 3 4 7 9 10 12 14
SPACED = "\n<answer>\n1 34\n3412\n2143\n4321\n</answer>"  # the solution, blank 1 left a space


@pytest.mark.parametrize(
    "spaces, digits, cell_acc",
    [
        # digits only: the 15 digits slide one cell left from cell 1, one 0 pads the end; of the
        # 8 blanks only cell 7 still matches (2 = 2), so 1/8
        ("drop", "1343412214343210", 1 / 8),
        # the space is a 0 in place: only blank 1 is wrong, 7/8
        ("zero", "1034341221434321", 7 / 8),
    ],
)
def test_space_rule_by_hand(spaces, digits, cell_acc):
    from upo.tasks.registry import get_task
    from upo.tasks.text.sudoku_paper import answer_digits

    assert answer_digits(SPACED, spaces) == digits
    task = get_task("sudoku4-paper", {"spaces": spaces})
    assert task.score(SPACED, {"puzzle": PUZZLE, "solution": SOLUTION}) == (False, cell_acc)


def test_space_rule_default_is_upos_and_bad_values_are_one_line():
    from upo.tasks.registry import get_task

    assert get_task("sudoku4-paper").spaces == "drop"
    with pytest.raises(UpoError) as err:
        get_task("sudoku4-paper", {"spaces": "keep"})
    assert "spaces must be one of drop, zero" in str(err.value) and "\n" not in str(err.value)


def pre_text(path) -> str:
    """The pre-training recipe's text, whose command writes the head the paper config starts from."""
    return path.with_name("policy-pretrain-llada-sudoku4-paper.yaml").read_text()


def test_the_paper_config_sets_the_authors_choices():
    """configs/llada-sudoku4-paper.yaml: every option of this file at the authors' value, and its
    task options build the task (the training reward reads spaces as 0)."""
    from pathlib import Path

    from upo.tasks.registry import get_task

    path = Path(__file__).resolve().parents[1] / "configs" / "llada-sudoku4-paper.yaml"
    cfg = load_config(UPOConfig, path)
    assert (cfg.temperature, cfg.loss_temperature, cfg.log_ratio_clamp) == (0.8, 1.0, 10.0)
    assert (cfg.reference, cfg.ce_ties, cfg.step_aggregation) == (
        "confidence",
        "model-dtype",
        "sum",
    )
    assert (cfg.scale_rewards, cfg.scale_rewards_eps, cfg.zero_std_groups) == (False, 1e-4, True)
    assert get_task(cfg.task, cfg.task_options).spaces == "zero"
    # the authors' rate and 4-bit MDM, and their start: a head pre-trained to max-confidence
    assert cfg.lr == 3e-6 and cfg.mdm_options["load_in_4bit"] is True
    assert (cfg.init, cfg.pretrained) == ("pretrained", "runs/llada-sudoku4-paper-pretrain")
    from upo.rl.pretrain import PretrainConfig

    pre = load_config(PretrainConfig, path.with_name("policy-pretrain-llada-sudoku4-paper.yaml"))
    assert f"--out {cfg.pretrained}" in pre_text(path)
    assert (pre.task, pre.mdm, pre.reference) == (cfg.task, cfg.mdm, "confidence")
    assert pre.policy == {"arch": "mdm-block"}  # the authors' head, nothing added
    assert pre.mdm_options == cfg.mdm_options


# --- the paper's other two realisations -----------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# What each realisation's config changes from the max-confidence (CE) one, as the authors' runs
# in their slurm_scripts/sudoku.slurm differ ("pretrain+CE", "pretrain+KL", "Random_TopK_KL").
REALISATIONS = {
    "llada-sudoku4-kl-paper.yaml": {"reference": "softmax-vocab:0.05", "ce_ties": None},
    "llada-sudoku4-topk-paper.yaml": {
        "reference": "topk-random:5",
        "ce_ties": None,
        "init": "random",
        "pretrained": None,
        "policy": {"arch": "mdm-block"},
    },
}


@pytest.mark.parametrize("name", sorted(REALISATIONS))
def test_the_other_realisations_differ_from_the_ce_config_only_where_the_authors_runs_do(name):
    ce = yaml.safe_load((CONFIGS / "llada-sudoku4-paper.yaml").read_text())
    other = yaml.safe_load((CONFIGS / name).read_text())
    changed = {k: other.get(k) for k in set(ce) | set(other) if ce.get(k) != other.get(k)}
    assert changed == REALISATIONS[name]
    cfg = load_config(UPOConfig, CONFIGS / name)  # valid as a whole (ce_ties back to its default)
    assert cfg.ce_ties == "argmax" and cfg.lr == 3e-6 and cfg.loss_temperature == 1.0


@pytest.mark.parametrize("name", sorted(REALISATIONS))
def test_each_realisation_trains_with_the_papers_head_on_the_tiny_mdm(name, tmp_path):
    """The realisation's reference, start and loss options on the built-in 4x4 MDM with the
    paper's head (mdm-block, random start here: the toy has no pre-trained head): one round."""
    from test_grpo import write_sudoku4_setup
    from upo.rl.grpo import train_upo

    config = write_sudoku4_setup(tmp_path)
    data = yaml.safe_load(config.read_text())
    paper = yaml.safe_load((CONFIGS / name).read_text())
    keys = ("reference", "temperature", "logprob_temperature", "log_ratio_clamp", "clip_eps")
    data.update({k: paper[k] for k in keys})
    data.update(policy={"arch": "mdm-block"}, init="random", steps=1, zero_std_groups=True)
    config.write_text(yaml.safe_dump(data))
    meta = train_upo(load_config(UPOConfig, config), tmp_path / "policy")
    assert meta["complete"]
    saved = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert saved["policy"]["arch"] == "mdm-block"
    assert saved["policy"]["restrict_topk"] == (5 if "topk" in name else None)
