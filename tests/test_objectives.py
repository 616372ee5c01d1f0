"""The objective seam of the GRPO step: UPOConfig.objective names a class of rl/objectives.py."""

from __future__ import annotations

import pytest
import torch

from upo.errors import UpoError
from upo.rl.grpo_config import UPOConfig
from upo.rl.objectives import OBJECTIVES, Chunk, UPOObjective, make_objective
from upo.rl.references import make_reference


def test_upo_is_the_default_and_is_left_out_of_the_run_record():
    cfg = UPOConfig(init="random")
    assert isinstance(make_objective(cfg, make_reference("none")), UPOObjective)
    assert "objective" not in cfg.run_config()
    assert list(OBJECTIVES) == ["upo"]


def test_an_unknown_objective_is_a_one_line_error():
    cfg = UPOConfig(init="random", objective="dpo")
    with pytest.raises(UpoError, match="unknown objective 'dpo'; valid: upo"):
        make_objective(cfg, make_reference("none"))


def test_a_new_objective_is_one_class(monkeypatch):
    """Any class with advantages, ratio, loss and regulariser_value, listed in OBJECTIVES."""

    class PlainPG(UPOObjective):
        def loss(self, c, adv, ref_traj):
            return -(c.new * adv[c.item] * c.weight).sum(), 0.0

    monkeypatch.setitem(OBJECTIVES, "pg", PlainPG)
    cfg = UPOConfig(init="random", objective="pg")
    assert cfg.run_config()["objective"] == "pg"
    objective = make_objective(cfg, make_reference("none"))
    new = torch.tensor([-1.0, -2.0], requires_grad=True)
    chunk = Chunk(torch.tensor([0, 1]), new, new.detach(), torch.ones(2), torch.ones(2), None)
    loss, _ = objective.loss(chunk, torch.tensor([1.0, -1.0]), torch.zeros(2))
    loss.backward()
    assert new.grad.tolist() == [-1.0, 1.0]


def test_the_kl_regulariser_reports_the_batch_estimate():
    """For a KL reference the round's regulariser is mean over trajectories of log g_old - log
    g_ref; for a CE reference it is the chunks' summed cross-entropy."""
    cfg = UPOConfig(init="random", reference="softmax:0.5")
    kl = make_objective(cfg, make_reference("softmax:0.5"))
    old = torch.tensor([-1.0, -1.0, -3.0])
    item = torch.tensor([0, 0, 1])
    ref_traj = torch.tensor([-2.5, -2.0])
    assert kl.regulariser_value(7.0, old, item, ref_traj) == pytest.approx((0.5 - 1.0) / 2)
    ce = make_objective(UPOConfig(init="random"), make_reference("confidence"))
    assert ce.regulariser_value(7.0, old, item, ref_traj) == 7.0
