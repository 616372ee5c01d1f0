"""policy.arch mdm-block, the paper's head: a copy of the MDM's last block, a fresh norm of its final
norm's type and a 3-hidden-layer MLP of width D + 10, on the real LLaDA and Dream code (toy size,
through the Hugging Face adapter) and on upo's built-in MDM: shapes, the parameter count formula,
gradients only in the head, the copy starting equal to the MDM's block, and checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_tiny
from reference_models import model_dir, require_reference_models
from upo.errors import UpoError
from upo.models.hf import HFDenoiser
from upo.policies.base import StepState
from upo.policies.learned import (
    LearnedPolicy,
    PolicyConfig,
    PolicyNet,
    inputs_from_state,
    load_policy,
    save_policy,
)


@pytest.fixture(scope="module")
def hf_mdms(tmp_path_factory):
    require_reference_models()
    root = tmp_path_factory.mktemp("mdm-block")
    return {
        kind: HFDenoiser.from_pretrained(
            model_dir(kind, root, seed=2), trust_remote_code=True, dtype="float32"
        )
        for kind in ("llada", "dream")
    }


def mdm_of(kind: str, hf_mdms):
    if kind == "tiny":
        return make_tiny("seq", seed=0).freeze_for_inference()
    return hf_mdms[kind]


def state_of(mdm, padded: bool = False) -> StepState:
    """A decoding state of two sequences of 12 tokens, their last 6 masked; with `padded` the
    second row starts with 3 padding tokens."""
    gen = torch.Generator().manual_seed(3)
    length = mdm.seq_len or 12
    tokens = torch.randint(0, mdm.mask_id, (2, length), generator=gen)
    tokens[:, -6:] = mdm.mask_id
    attention = torch.ones_like(tokens, dtype=torch.bool)
    if padded:
        attention[1, :3] = False
    with torch.no_grad():
        logits, features = mdm.forward(tokens, attention)
    return make_state(mdm, tokens, logits, features, attention)


def make_state(mdm, tokens, logits, features, attention) -> StepState:
    """Every masked position a candidate; the block flag on for the last 3 positions, so the
    two flags differ."""
    masked = tokens == mdm.mask_id
    block = torch.zeros_like(masked)
    block[:, -3:] = True
    return StepState(
        tokens, logits, features, masked, masked.clone(), block, 0, attention_mask=attention
    )


def head(mdm, **options) -> PolicyNet:
    torch.manual_seed(1)
    cfg = PolicyConfig(mdm.feature_dim, arch="mdm-block", **options)
    return PolicyNet(cfg, bf16=False, mdm=mdm)


def last_block_and_norm(kind: str, mdm) -> tuple[nn.Module, nn.Module]:
    """The MDM's last block and final norm, found by their documented names (not by the code
    under test)."""
    if kind == "tiny":
        return mdm.blocks[-1], mdm.norm
    if kind == "llada":
        t = mdm.model.model.transformer
        return t.blocks[-1], t.ln_f
    return mdm.model.model.layers[-1], mdm.model.model.norm


KINDS = ["tiny", "llada", "dream"]


@pytest.mark.parametrize("kind", KINDS)
def test_scores_one_per_position(kind, hf_mdms):
    mdm = mdm_of(kind, hf_mdms)
    state = state_of(mdm)
    net = head(mdm).eval()
    inp = inputs_from_state(state, mdm.mask_id, None)
    scores = net(inp)
    assert scores.shape == state.tokens.shape and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    logp = LearnedPolicy(net, mdm.mask_id).log_probs(state)
    assert torch.allclose(logp.exp().sum(1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_count_formula(kind, hf_mdms):
    """block + norm + 3 (m^2 + 2m) + m, m = D + 10 (an m x m weight and a LayerNorm's scale and
    shift per hidden layer, then an m x 1 weight; no biases in the Linear layers)."""
    mdm = mdm_of(kind, hf_mdms)
    block, norm = last_block_and_norm(kind, mdm)
    d = mdm.feature_dim
    m = d + 10
    expected = (
        sum(p.numel() for p in block.parameters())
        + sum(p.numel() for p in norm.parameters())
        + 3 * (m * m + 2 * m)
        + m
    )
    assert head(mdm).num_parameters() == expected
    assert head(mdm, confidence_skip=20.0).num_parameters() == expected + 1
    if kind != "tiny":  # the toy configs: d_model 64, so the MLP alone is 3 (5476 + 148) + 74
        assert 3 * (m * m + 2 * m) + m == 16_946


@pytest.mark.parametrize("kind", KINDS)
def test_block_starts_as_the_mdms_and_does_not_share_its_tensors(kind, hf_mdms):
    mdm = mdm_of(kind, hf_mdms)
    block, _ = last_block_and_norm(kind, mdm)
    net = head(mdm)
    copied = dict(net.trunk.block.named_parameters())
    original = dict(block.named_parameters())
    assert copied.keys() == original.keys()
    for name, p in original.items():
        assert torch.equal(copied[name].detach(), p.detach().float()), name
        assert copied[name].data_ptr() != p.data_ptr()
        assert copied[name].requires_grad and not p.requires_grad


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_adapter_last_layer_is_the_block_its_features_enter(kind, hf_mdms):
    """HFDenoiser.last_layer(): the MDM's last block by its documented name, and the module
    whose input is the features forward() returns."""
    mdm = mdm_of(kind, hf_mdms)
    block, _ = last_block_and_norm(kind, mdm)
    assert mdm.last_layer() is block
    seen = []
    hook = mdm.last_layer().register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True,
    )
    try:
        state = state_of(mdm)
    finally:
        hook.remove()
    assert len(seen) == 1
    assert torch.equal(seen[0], state.features)


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_only_in_the_head(kind, hf_mdms):
    mdm = mdm_of(kind, hf_mdms)
    module = mdm if kind == "tiny" else mdm.model
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    net = head(mdm).train()
    inp = inputs_from_state(state_of(mdm, padded=kind != "tiny"), mdm.mask_id, None)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net(inp).masked_fill(~inp.allowed, 0.0).square().sum().backward()
    assert all(p.grad is None for p in module.parameters())
    # every tensor of the head gets a gradient: the block, the norm and the MLP
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    after = dict(module.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_padding_does_not_reach_the_real_positions(kind, hf_mdms):
    """A row scored with 3 padding positions in front gives its real positions the scores it gets
    alone: the block copy masks padding as the MDM's own forward does."""
    mdm = hf_mdms[kind]
    net = head(mdm).eval()
    padded = state_of(mdm, padded=True)
    row = padded.tokens[1:, 3:]
    with torch.no_grad():
        logits, features = mdm.forward(row, torch.ones_like(row, dtype=torch.bool))
    alone = make_state(mdm, row, logits, features, None)
    with torch.no_grad():
        a = net(inputs_from_state(padded, mdm.mask_id, None))[1, 3:]
        b = net(inputs_from_state(alone, mdm.mask_id, None))[0]
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoint_round_trip_gives_identical_scores(kind, hf_mdms, tmp_path):
    mdm = mdm_of(kind, hf_mdms)
    net = head(mdm, confidence_skip=20.0)
    with torch.no_grad():  # move every weight off its initial value, as training would
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    inp = inputs_from_state(state_of(mdm), mdm.mask_id, None)
    save_policy(tmp_path / "ckpt", net, mdm.fingerprint(), {"note": "test"})
    loaded = load_policy(tmp_path / "ckpt", mdm, dtype="float32")
    assert loaded.cfg.arch == "mdm-block"
    assert torch.equal(net(inp), loaded(inp))
    with pytest.raises(UpoError, match="with the MDM it was trained on"):
        load_policy(tmp_path / "ckpt")


def test_refusals(hf_mdms):
    mdm = mdm_of("tiny", hf_mdms)
    with pytest.raises(UpoError, match="needs the MDM"):
        PolicyNet(PolicyConfig(mdm.feature_dim, arch="mdm-block"))
    with pytest.raises(ValueError, match="board_vocab nor keep_above"):
        PolicyNet(PolicyConfig(mdm.feature_dim, arch="mdm-block", keep_above=0.9), mdm=mdm)
    with pytest.raises(ValueError, match="arch must be one of"):
        PolicyConfig(mdm.feature_dim, arch="transformer").validate()


def test_default_head_unchanged_by_the_option(hf_mdms):
    """arch defaults to upo's head: a config without it builds the same network as before."""
    mdm = mdm_of("tiny", hf_mdms)
    torch.manual_seed(0)
    a = PolicyNet(PolicyConfig(mdm.feature_dim, width=16, n_heads=2, mlp_hidden=16))
    torch.manual_seed(0)
    b = PolicyNet(PolicyConfig(mdm.feature_dim, width=16, n_heads=2, mlp_hidden=16, arch="upo"))
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not hasattr(a, "trunk")


def test_trains_saves_and_resumes_as_one_run(tmp_path, monkeypatch):
    """policy train with policy.arch mdm-block on the built-in MDM: a run interrupted in its
    third rollout round and resumed ends with the weights of an uninterrupted run, and its
    checkpoint loads back as the same head."""
    import yaml

    import upo.rl.grpo as grpo
    from test_grpo import write_sudoku4_setup
    from upo.config import load_config
    from upo.models.registry import load_mdm
    from upo.rl.grpo import UPOConfig, train_upo

    config = write_sudoku4_setup(tmp_path)
    data = yaml.safe_load(config.read_text())
    data.update(steps=3, policy={"arch": "mdm-block", "confidence_skip": 20.0}, lr=1e-3)
    config.write_text(yaml.safe_dump(data))
    cfg = load_config(UPOConfig, config)
    train_upo(cfg, tmp_path / "whole")

    real_update, calls = grpo.update, []

    def dies_in_round_three(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_update(*args, **kw)

    monkeypatch.setattr(grpo, "update", dies_in_round_three)
    with pytest.raises(KeyboardInterrupt):
        train_upo(cfg, tmp_path / "resumed")
    monkeypatch.setattr(grpo, "update", real_update)
    meta = train_upo(cfg, tmp_path / "resumed", resume=True)
    assert meta["complete"]
    mdm = load_mdm(data["mdm"])
    whole = load_policy(tmp_path / "whole", mdm)
    resumed = load_policy(tmp_path / "resumed", mdm)
    assert whole.cfg.arch == "mdm-block"
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("trunk.block.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # trained: the block copy moved away from the MDM's own last block
    start = PolicyNet(whole.cfg, bf16=False, mdm=mdm).state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a if k.startswith("trunk.block."))


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_head_runs_and_follows_the_float32_one(kind, hf_mdms):
    """In a bf16 policy (the MDM's precision on a GPU) the block runs under bf16 autocast and the
    MLP's norms in float32: finite scores close to the float32 head's, same weights."""
    mdm = mdm_of(kind, hf_mdms)
    net = head(mdm).eval()
    fast = PolicyNet(net.cfg, bf16=True, mdm=mdm).eval()
    fast.load_state_dict(net.state_dict())
    inp = inputs_from_state(state_of(mdm, padded=kind != "tiny"), mdm.mask_id, None)
    with torch.no_grad():
        a, b = net(inp), fast(inp)
    assert torch.isfinite(b).all()
    real = inp.valid
    assert torch.allclose(a[real], b[real], atol=0.1 * float(a[real].abs().max()) + 1e-3)


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_grpo_trains_the_head_on_the_real_code(kind, tmp_path):
    """policy train with policy.arch mdm-block on the toy-size real LLaDA / Dream through the HF
    adapter: a rollout round, a checkpoint that loads back with its MDM, and a block that moved."""
    from pathlib import Path

    from upo.models.registry import load_mdm
    from upo.rl.grpo import UPOConfig, train_upo

    require_reference_models()
    directory = model_dir(kind, tmp_path, seed=4)
    fixtures = Path(__file__).parent / "fixtures" / "text"
    cfg = UPOConfig(
        task="countdown",
        mdm=f"hf:{directory}",
        mdm_options={"trust_remote_code": True, "dtype": "float32"},
        task_options={"gen_length": 8, "block_length": 4},
        train_data=str(fixtures / "countdown.jsonl"),
        val_data=None,
        init="random",
        policy={"arch": "mdm-block"},
        reference="confidence",
        steps=1,
        prompts_per_step=2,
        group_size=2,
        inner_steps=2,
        checkpoint_every=1,
        threads=1,
        temperature=0.8,
        beta=1e-4,
        lr=1e-2,
        reward="solved",
    )
    meta = train_upo(cfg, tmp_path / "policy")
    assert meta["complete"]
    mdm = load_mdm(f"hf:{directory}", options={"trust_remote_code": True, "dtype": "float32"})
    net = load_policy(tmp_path / "policy", mdm)
    block, _ = last_block_and_norm(kind, mdm)
    trained = dict(net.trunk.block.named_parameters())
    assert any(not torch.equal(trained[n], p.float()) for n, p in block.named_parameters())
