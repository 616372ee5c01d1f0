"""Block-wise key/value caching (upo/cache.py) on the real LLaDA and Dream code (toy size) and on
upo's own MDM: what is exact is asserted exact, the approximation's logit drift is measured against
the uncached forward and bounded (docs/cache.md records the numbers), batched equals one by one,
every policy family decodes with a cache, and what cannot be cached is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import upo
from reference_models import MASK_ID, model_dir, require_reference_models
from upo.cache import KVStore, check_cacheable, query_positions
from upo.decode import unmask
from upo.errors import UpoError
from upo.models.denoiser import TimedDenoiser
from upo.models.hf import HFDenoiser
from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet
from upo.policies.rules import make_rule

ADDITION_TEST = str(Path(__file__).resolve().parents[1] / "data" / "addition-test.jsonl")
PROMPTS = ["what is 2+2?", "hi", "count: 1 2 3 4 5 6 7 8 9", "solve x"]
KINDS = ("llada", "dream")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    require_reference_models()
    root = tmp_path_factory.mktemp("cache-models")
    # sharpened weights (confident, context-dependent predictions, as the other reference-model
    # tests use) for decoding; the plain initialisation for the drift, where sharpened random
    # weights are a worst case no trained model resembles (see test_drift_...)
    return {
        "sharp": {kind: model_dir(kind, root / "sharp", seed=1) for kind in KINDS},
        "init": {kind: model_dir(kind, root / "init", seed=1, sharp=False) for kind in KINDS},
    }


@pytest.fixture(scope="module")
def mdms(dirs):
    return {
        (weights, kind): HFDenoiser.from_pretrained(path, trust_remote_code=True, dtype="float32")
        for weights, paths in dirs.items()
        for kind, path in paths.items()
    }


def padded_batch(prompt_lengths, gen_length, seed=0):
    """Left-padded prompts of random tokens followed by gen_length masks."""
    g = torch.Generator().manual_seed(seed)
    longest = max(prompt_lengths)
    tokens = torch.full((len(prompt_lengths), longest + gen_length), MASK_ID)
    attention = torch.ones_like(tokens, dtype=torch.bool)
    for i, n in enumerate(prompt_lengths):
        tokens[i, : longest - n] = 0
        attention[i, : longest - n] = False
        tokens[i, longest - n : longest] = torch.randint(4, 60, (n,), generator=g)
    return tokens, attention


def learned_policy(feature_dim: int, seed: int = 0) -> LearnedPolicy:
    torch.manual_seed(seed)
    net = PolicyNet(PolicyConfig(feature_dim, width=16, n_heads=2, mlp_hidden=16)).eval()
    return LearnedPolicy(net, MASK_ID, greedy=True)


# -- exact where it is exact ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_refresh_is_the_uncached_forward_and_an_unchanged_block_recomputes_it(mdms, kind):
    mdm = mdms["sharp", kind]
    tokens, attention = padded_batch([10, 7], 16)
    full, full_features = mdm.forward(tokens, attention)
    store = KVStore(2)
    store.begin(torch.arange(2), None)
    logits, features = mdm.forward_cached(tokens, attention, store)
    assert torch.equal(logits, full) and torch.equal(features, full_features)
    finite = torch.isfinite(full)
    for start, end in [(10, 18), (10, 26), (18, 26)]:  # dual blocks, a prefix span
        store.begin(
            torch.arange(2), query_positions(torch.tensor([start] * 2), torch.tensor([end] * 2))
        )
        logits, features = mdm.forward_cached(tokens, attention, store)
        # nothing changed since the refresh: the same numbers up to rounding (measured: equal)
        assert (logits - full)[finite].abs().max() < 1e-4
        assert (features - full_features).abs().max() < 1e-4
    # a token the queries' cached context does not know about: they must not see it
    changed = tokens.clone()
    changed[:, 5] = 7
    store.begin(torch.arange(2), query_positions(torch.tensor([10, 10]), torch.tensor([18, 18])))
    stale, _ = mdm.forward_cached(changed, attention, store)
    assert (stale - full)[finite].abs().max() < 1e-4
    fresh, _ = mdm.forward(changed, attention)
    assert (fresh - full)[finite].abs().max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_bfloat16_models_cache_too(dirs, kind):
    # LLaDA's attention casts its padding bias and rotates in float32 inside a bf16 model
    mdm = HFDenoiser.from_pretrained(dirs["sharp"][kind], trust_remote_code=True, dtype="bfloat16")
    tokens, attention = padded_batch([10, 7], 16)
    full, _ = mdm.forward(tokens, attention)
    store = KVStore(2)
    store.begin(torch.arange(2), None)
    assert torch.equal(mdm.forward_cached(tokens, attention, store)[0], full)
    store.begin(torch.arange(2), query_positions(torch.tensor([10, 10]), torch.tensor([18, 18])))
    logits, _ = mdm.forward_cached(tokens, attention, store)
    finite = torch.isfinite(full)
    assert (logits - full)[finite].abs().max() <= 0.05 * full[finite].std()  # bf16 rounding
    out = upo.generate(mdm, PROMPTS, gen_length=16, block_length=8, chat=False, cache="dual")
    assert (out.tokens != MASK_ID).all()


def test_builtin_mdm_refresh_is_its_forward_and_an_unchanged_answer_recomputes_it():
    from upo.tasks.registry import get_task

    mdm = upo.load_mdm("addition-mdm")  # bf16 autocast where the CPU has it, as decoding runs
    tokens = torch.from_numpy(get_task("addition").generate(8, (3, 6), seed=1).tokens)
    attention = torch.ones_like(tokens, dtype=torch.bool)
    full, full_features = mdm.forward(tokens, attention)
    store = KVStore(8)
    store.begin(torch.arange(8), None)
    logits, features = mdm.forward_cached(tokens, attention, store)
    assert torch.equal(logits, full) and torch.equal(features, full_features)
    first = int((tokens == mdm.mask_id).float().argmax(1).min())
    rows = torch.arange(2, 6)  # some rows only, as when the others have finished
    store.begin(rows, query_positions(torch.full((4,), first), torch.full((4,), tokens.shape[1])))
    logits, features = mdm.forward_cached(tokens[rows], attention[rows], store)
    finite = torch.isfinite(full[rows])
    assert (logits - full[rows])[finite].abs().max() <= 0.02 * full[rows][finite].std()
    assert (logits.argmax(-1) == full[rows].argmax(-1)).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_one_step_per_block_makes_every_step_a_refresh_so_the_decode_is_exact(mdms, kind, cache):
    mdm = mdms["sharp", kind]
    tokens, attention = padded_batch([10, 7, 12], 16)
    policy = make_rule("confidence")
    plain = unmask(mdm, tokens, policy, attention_mask=attention, k=8, block_size=8)
    cached = unmask(mdm, tokens, policy, attention_mask=attention, k=8, block_size=8, cache=cache)
    assert torch.equal(cached.tokens, plain.tokens) and torch.equal(cached.order, plain.order)
    assert torch.equal(cached.token_loglik, plain.token_loglik)


def test_cache_none_is_the_default_and_bit_identical(mdms):
    mdm = mdms["sharp", "llada"]
    default = upo.generate(mdm, PROMPTS, gen_length=16, block_length=8, chat=False)
    none = upo.generate(mdm, PROMPTS, gen_length=16, block_length=8, chat=False, cache="none")
    for a, b in zip(
        (default.tokens, default.order, default.nfe), (none.tokens, none.order, none.nfe)
    ):
        assert (a == b).all()
    assert default.token_loglik.tolist() == none.token_loglik.tolist()


# -- the approximation: logit drift against the uncached forward ---------------------------------

# Mean |cached - uncached| logit at the block's positions, in units of the uncached logits'
# standard deviation, over a block's steps after its first (teacher-forced on the uncached decode,
# so both caches see the same tokens). Measured on the plain initialisation (docs/cache.md):
# LLaDA prefix 0.006 / dual 0.010 (top-1 agreement 0.98 / 0.94), Dream prefix 0.060 / dual 0.087
# (0.92 / 0.88). The bounds are about twice that: room for other CPUs' rounding, not for a wrong
# rotary position or a missed key, which the exact tests above catch.
DRIFT_BOUND = {"llada": 0.02, "dream": 0.15}


def drift_by_step(mdm, cache: str, block_size: int = 8):
    """[(step in block, relative drift, top-1 agreement at masked block positions)] along the
    uncached max-confidence decode (one position per step, blocks aligned across rows)."""
    tokens, attention = padded_batch([12, 9, 12, 6], 32, seed=3)
    states = []
    unmask(
        mdm, tokens, make_rule("confidence"), attention_mask=attention, block_size=block_size,
        on_step=lambda rows, state, choice: states.append(state.tokens.clone()),
    )  # fmt: skip
    b, first = len(tokens), tokens.shape[1] - 32
    rows = torch.arange(b)
    store, out = KVStore(b), []
    for step, state_tokens in enumerate(states):
        within = step % block_size
        start = first + (step // block_size) * block_size
        end = tokens.shape[1] if cache == "prefix" else start + block_size
        if within == 0:
            store.begin(rows, None)
        else:
            store.begin(rows, query_positions(torch.full((b,), start), torch.full((b,), end)))
        logits, features = mdm.forward_cached(state_tokens, attention, store)
        full, full_features = mdm.forward(state_tokens, attention)
        if within == 0:
            assert torch.equal(logits, full) and torch.equal(features, full_features)
        block = slice(start, start + block_size)
        ref, got = full[:, block], logits[:, block]
        finite = torch.isfinite(ref)
        drift = float((got - ref)[finite].abs().mean() / ref[finite].std())
        masked = state_tokens[:, block] == MASK_ID
        agree = float((got.argmax(-1) == ref.argmax(-1))[masked].float().mean())
        out.append((within, drift, agree))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_drift_is_zero_at_each_block_start_and_bounded_inside(mdms, kind):
    measured = {}
    for cache in ("prefix", "dual"):
        steps = drift_by_step(mdms["init", kind], cache)
        assert all(d == 0.0 and a == 1.0 for w, d, a in steps if w == 0)
        inside = [(d, a) for w, d, a in steps if w > 0]
        mean = sum(d for d, _ in inside) / len(inside)
        agree = sum(a for _, a in inside) / len(inside)
        measured[cache] = (round(mean, 4), round(agree, 3))
        assert 0 < mean < DRIFT_BOUND[kind], measured
        assert agree > 0.8, measured
    print(kind, "mean relative drift, top-1 agreement:", measured)


# -- batching, policies, what runs ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_batched_equals_one_by_one(mdms, kind, cache):
    # threshold fills a varying number per step, so rows reach their blocks at different steps:
    # one forward then holds rows refreshing and rows reusing their cache
    mdm = TimedDenoiser(mdms["sharp", kind])
    settings = dict(gen_length=16, block_length=4, chat=False, cache=cache, threshold=0.5)
    together = upo.generate(mdm, PROMPTS, batch_size=4, **settings)
    steps, calls = int(together.nfe.max()), mdm.calls
    assert calls > steps  # some steps ran a refresh and a cached forward: rows in different blocks
    alone = upo.generate(mdm, PROMPTS, batch_size=1, **settings)
    assert (together.tokens == alone.tokens).all() and (together.order == alone.order).all()
    assert (together.nfe == alone.nfe).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize(
    "policy",
    [
        "confidence",
        "threshold:0.9",
        "eb:0.1",
        "margin",
        "random",
        "softmax:0.1",
        "lookahead:2",
        "learned",
    ],
)
def test_every_policy_family_decodes_with_a_cache(mdms, kind, cache, policy):
    mdm = mdms["sharp", kind]
    chosen = learned_policy(mdm.feature_dim) if policy == "learned" else policy
    out = upo.generate(mdm, PROMPTS, chosen, gen_length=16, block_length=8, chat=False, cache=cache)
    assert out.tokens.shape == (4, 16) and (out.tokens != MASK_ID).all()
    assert sorted(set(out.order.flatten().tolist()))[0] == 0 and (out.order >= 0).all()
    assert (out.nfe >= 2).all()  # at least one step per block
    for block in model_blocks(mdm):
        assert "attention" not in vars(block)  # LLaDA's own attention is back after each forward


def model_blocks(mdm):
    from upo.models.hf_cache import layer_stack

    return list(layer_stack(mdm.model, mdm._n_layers))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cache,expected", [("dual", 8), ("prefix", 16)])
def test_inside_a_block_only_its_positions_run(mdms, kind, cache, expected):
    mdm = mdms["sharp", kind]
    lengths = []
    hook = model_blocks(mdm)[-1].register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True,
    )  # fmt: skip
    try:
        upo.generate(mdm, PROMPTS[:1], gen_length=16, block_length=8, chat=False, cache=cache)
    finally:
        hook.remove()
    # one position per step: 8 steps per block, the first a whole forward
    full = lengths[0]
    first_block, second_block = lengths[:8], lengths[8:]
    shift = 1 if kind == "dream" else 0  # Dream's logits come from the position before
    assert first_block == [full] + [expected + shift] * 7
    assert second_block == [full] + [8 + shift] * 7


def test_builtin_mdm_caches_the_prompt_of_its_prompt_and_answer_tasks():
    from upo.tasks.registry import get_task

    mdm = upo.load_mdm("addition-mdm")
    batch = get_task("addition").generate(24, (1, 6), seed=3)
    assert mdm.cache_refusal() is None
    plain = upo.generate(mdm, batch.tokens, "confidence")
    for cache in ("prefix", "dual"):  # one block: both cache the prompt and run the answer
        out = upo.generate(mdm, batch.tokens, "confidence", cache=cache)
        filled = batch.tokens == mdm.mask_id
        assert (out.tokens[filled] != mdm.mask_id).all()
        assert (out.tokens[~filled] == batch.tokens[~filled]).all()
        # the trained addition MDM's answer barely depends on which digits are revealed
        # around it: measured agreement with the uncached decode 1.0 (bound: 0.9)
        same = (out.tokens[filled] == plain.tokens[filled]).mean()
        assert same > 0.9
        one_by_one = upo.generate(mdm, batch.tokens, "confidence", cache=cache, batch_size=1)
        assert (one_by_one.tokens == out.tokens).all()


# -- refusals ------------------------------------------------------------------------------------


def test_unknown_cache_mode_is_refused(mdms):
    with pytest.raises(UpoError, match="cache must be one of none, prefix, dual"):
        upo.generate(mdms["sharp", "llada"], PROMPTS, gen_length=8, cache="full")


def test_models_that_cannot_be_cached_are_refused_in_one_line():
    from hf_standins import (
        TinyDreamConfig,
        TinyDreamModel,
        TinyLladaConfig,
        TinyLladaModel,
        make_tokenizer,
    )
    from toy_denoiser import ChainDenoiser

    cases = [
        (HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer()), "per-layer rotary"),
        # takes **kwargs: a cache would be swallowed silently, so it must be refused
        (HFDenoiser(TinyDreamModel(TinyDreamConfig()), make_tokenizer()), "past_key_values"),
        (
            HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer(), convention="masked-lm"),
            "masked-lm convention",
        ),
        (ChainDenoiser(), "has no cached forward"),
    ]
    for mdm, why in cases:
        check_cacheable(mdm, "none")  # nothing to check
        with pytest.raises(UpoError, match=why) as err:
            check_cacheable(mdm, "dual")
        assert "\n" not in str(err.value) and str(err.value).startswith("cache dual: ")


def test_cli_refuses_an_unknown_cache_mode(capsys):
    from upo.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--task", "sudoku4", "--mdm", "x", "--data", "y", "--cache", "full"])
    assert "invalid choice: 'full'" in capsys.readouterr().err


# -- the cache through upo eval, lm-eval and GRPO rollouts ---------------------------------------


def test_upo_eval_decodes_with_the_cache_and_records_it(tmp_path):
    from upo.cli import main

    records = {}
    argv = ["eval", "--task", "addition", "--mdm", "addition-mdm", "--data", ADDITION_TEST]
    argv += ["--policies", "confidence,addition-policy", "--n", "48"]
    for cache in ("none", "dual"):
        out = tmp_path / f"{cache}.json"
        assert main([*argv, "--cache", cache, "--json", str(out)]) == 0
        records[cache] = json.loads(out.read_text())
    # none writes the record it always did; a cache is recorded beside k
    assert "cache" not in records["none"] and records["dual"]["cache"] == "dual"
    for plain, cached in zip(records["none"]["results"], records["dual"]["results"]):
        assert cached["policy"] == plain["policy"] and cached["nfe"] == plain["nfe"]
        # the trained addition MDM: the same answers (benchmarks/cache.md, 256 items)
        assert cached["solve_rate"] == plain["solve_rate"]


def test_upo_eval_refuses_what_it_cannot_cache_in_one_line(capsys):
    from upo.cli import main
    from upo.evaluation import EvalSettings, evaluate

    settings = EvalSettings("addition", "addition-mdm", ADDITION_TEST, "confidence", n=4)
    settings.cache = "full"
    with pytest.raises(UpoError, match="cache must be one of none, prefix, dual"):
        evaluate(settings)
    argv = ["eval", "--task", "addition", "--mdm", "addition-mdm", "--data"]
    with pytest.raises(SystemExit):
        main([*argv, ADDITION_TEST, "--n", "4", "--cache", "full"])
    assert "invalid choice: 'full'" in capsys.readouterr().err


def test_lm_eval_model_decodes_through_the_cache(dirs):
    pytest.importorskip("lm_eval", reason="lm-eval is in the dev extras; this environment lacks it")
    from types import SimpleNamespace

    from upo.lmeval import UpoLM, parse_args

    assert parse_args({"pretrained": "x"})["cache"] == "none"
    path = str(dirs["sharp"]["llada"])
    settings = dict(dtype="float32", device="cpu", gen_length=16, block_length=8, policy="margin")
    lm = UpoLM(pretrained=path, trust_remote_code=True, cache="dual", **settings)
    answers = lm.generate_until([SimpleNamespace(args=(q, {})) for q in PROMPTS], True)
    for question, answer in zip(PROMPTS, answers):
        ids = lm.mdm.tokenizer(question)["input_ids"]
        alone = upo.generate(lm.mdm, [ids], "margin", gen_length=16, block_length=8, cache="dual")
        assert answer == alone.texts[0]
    with pytest.raises(UpoError, match="cache must be one of"):
        UpoLM(pretrained=path, trust_remote_code=True, cache="full", **settings)


def test_grpo_rollouts_use_the_cache_when_the_config_asks(tmp_path, monkeypatch):
    import yaml

    from upo.cache import BlockCache
    from upo.config import load_config
    from upo.rl.grpo import train_upo
    from upo.rl.grpo_config import UPOConfig
    from upo.tasks.registry import get_task

    with pytest.raises(ValueError, match="rollout_cache"):
        UPOConfig(rollout_cache="full").validate()
    assert "rollout_cache" not in UPOConfig().run_config()  # earlier runs still resume
    task = get_task("addition")
    train = tmp_path / "train.jsonl"
    task.write(train, task.generate(16, (1, 4), seed=5))
    config = {
        "task": "addition",
        "mdm": "addition-mdm",
        "train_data": str(train),
        "val_data": None,
        "policy": {"width": 16, "n_heads": 2, "mlp_hidden": 16},
        "init": "random",
        "reference": "confidence",
        "beta": 0.01,
        "steps": 1,
        "prompts_per_step": 4,
        "group_size": 2,
        "inner_steps": 1,
        "threads": 1,
        "warmup_steps": 1,
        "rollout_cache": "dual",
    }
    path = tmp_path / "upo.yaml"
    path.write_text(yaml.safe_dump(config))
    modes = []
    start = BlockCache.start.__func__
    monkeypatch.setattr(
        BlockCache, "start", classmethod(lambda cls, *a: modes.append(a[1]) or start(cls, *a))
    )
    train_upo(load_config(UPOConfig, path), tmp_path / "policy")
    assert modes == ["dual"]  # one rollout round, one decode
    saved = json.loads((tmp_path / "policy" / "config.json").read_text())
    assert saved["train"]["rollout_cache"] == "dual"

    # a model that cannot be cached is refused while the run is set up, before OUT exists
    from upo.models.tiny import TinyMDM

    monkeypatch.setattr(TinyMDM, "cache_refusal", lambda self: "no cached forward here")
    with pytest.raises(UpoError, match="cache dual: no cached forward here"):
        train_upo(load_config(UPOConfig, path), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
