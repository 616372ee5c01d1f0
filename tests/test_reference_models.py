"""upo on the real LLaDA and Dream model code (toy size, random weights made here): loading with
trust_remote_code under the pinned transformers, token-for-token conformance with LLaDA's
published generate(), Dream's logits as its own generation path computes them, and the padding
probe that catches models whose logits change under left padding."""

from __future__ import annotations

import pytest
import torch

from reference_models import MASK_ID, llada_generate, model_dir, require_reference_models
from upo.models.hf import HFDenoiser
from upo.models.registry import load_mdm
from upo.policies.rules import make_rule
from upo.tasks.text.encoding import encode_prompts
from upo.text_generation import generate_tokens

PROMPTS = ["what is 2+2?", "hi", "count: 1 2 3 4 5 6 7 8 9", "solve x"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    require_reference_models()
    root = tmp_path_factory.mktemp("reference-models")
    return {kind: model_dir(kind, root, seed=1) for kind in ("llada", "dream")}


@pytest.fixture(scope="module")
def llada(model_dirs):
    return HFDenoiser.from_pretrained(model_dirs["llada"], trust_remote_code=True, dtype="float32")


@pytest.fixture(scope="module")
def dream(model_dirs):
    return HFDenoiser.from_pretrained(model_dirs["dream"], trust_remote_code=True, dtype="float32")


# -- loading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_real_code_loads_with_trust_remote_code(model_dirs, kind):
    mdm = load_mdm(f"hf:{model_dirs[kind]}", options={"trust_remote_code": True})
    assert mdm.convention == kind
    assert (mdm.mask_id, mdm.vocab_size, mdm.feature_dim) == (MASK_ID, 72, 64)
    assert mdm.tokenizer is not None and mdm.tokenizer.mask_token_id == MASK_ID
    assert 1 in mdm.eos_ids and 3 in mdm.eos_ids  # <eos> and the end-of-turn token
    logits, features = mdm.forward(torch.randint(4, 60, (2, 9)))
    assert logits.shape == (2, 9, 72) and features.shape == (2, 9, 64)
    assert torch.isfinite(features).all() and (logits[..., MASK_ID] == float("-inf")).all()
    assert mdm.padding_exact


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_real_code_is_refused_without_trust_remote_code(model_dirs, kind):
    from upo.errors import UpoError

    with pytest.raises(UpoError, match="trust_remote_code"):
        load_mdm(f"hf:{model_dirs[kind]}")


# -- LLaDA: upo's confidence policy equals LLaDA's generate() ----------------------------------


# (gen_length, block_length, steps): one token per step, several per step, one block and several.
LLADA_SETTINGS = [(16, 16, 16), (16, 8, 16), (16, 8, 8), (24, 8, 6), (32, 16, 8), (32, 32, 4)]


@pytest.mark.parametrize("gen_length,block_length,steps", LLADA_SETTINGS)
def test_confidence_equals_lladas_generate(llada, gen_length, block_length, steps):
    tok = llada.tokenizer
    ours = generate_tokens(
        llada, PROMPTS, make_rule("confidence"), gen_length, block_length, steps, batch_size=4
    )
    for prompt, row in zip(PROMPTS, ours):
        ids = encode_prompts(tok, [prompt], gen_length, MASK_ID)[0][:, :-gen_length]
        theirs = llada_generate(llada.model, torch.from_numpy(ids), steps, gen_length, block_length)
        assert (theirs != MASK_ID).all()  # the premise: a model that never predicts [MASK]
        assert row.tolist() == theirs.tolist(), (gen_length, block_length, steps, prompt)


def test_lladas_generate_can_leave_masks_where_upo_fills_every_position(model_dirs):
    """LLaDA's generate() takes the argmax over the whole vocabulary, [MASK] included: a model
    that puts its argmax on [MASK] (a random init here; never a trained LLaDA) keeps masks in
    its output. upo excludes the mask token, so every position is filled exactly once."""
    import transformers

    model = transformers.AutoModel.from_pretrained(model_dirs["llada"], trust_remote_code=True)
    mdm = HFDenoiser(model, HFDenoiser.from_pretrained(model_dirs["llada"], True).tokenizer)
    prompt = torch.from_numpy(encode_prompts(mdm.tokenizer, ["hi"], 8, MASK_ID)[0][:, :-8])
    head = model.model.transformer.ff_out.weight
    with torch.no_grad():  # [MASK]'s logit becomes 3x that of the first answer token's argmax
        first = model(torch.cat([prompt, torch.full((1, 8), MASK_ID)], 1)).logits[0, -8].argmax()
        head[MASK_ID] = 3 * head[first]
    theirs = llada_generate(model, prompt, 8, 8, 8)
    ours = generate_tokens(mdm, ["hi"], make_rule("confidence"), 8, 8, 8)
    assert (theirs == MASK_ID).any() and not (ours == MASK_ID).any()


@pytest.mark.usefixtures("bf16_attention_under_a_lowered_kernel_level")
def test_model_dtype_softmax_reproduces_lladas_bf16_confidences(model_dirs):
    """In bf16, LLaDA's generate() computes its confidences with a softmax in bf16, where many
    near-ties become ties; upo's default float32 softmax can then order them differently.
    confidence="model" makes upo compute them as LLaDA does, ties broken by torch.topk: decoded
    one prompt at a time, upo then reproduces LLaDA's bf16 decodes exactly."""
    mdm = HFDenoiser.from_pretrained(
        model_dirs["llada"], trust_remote_code=True, dtype="bfloat16", confidence="model"
    )
    for gen_length, block_length, steps in [(16, 16, 16), (16, 8, 8), (32, 16, 8)]:
        ours = generate_tokens(
            mdm, PROMPTS, make_rule("confidence"), gen_length, block_length, steps, batch_size=1
        )
        for prompt, row in zip(PROMPTS, ours):
            ids = encode_prompts(mdm.tokenizer, [prompt], gen_length, MASK_ID)[0][:, :-gen_length]
            theirs = llada_generate(
                mdm.model, torch.from_numpy(ids), steps, gen_length, block_length
            )
            assert row.tolist() == theirs.tolist(), (gen_length, block_length, steps, prompt)


# -- Dream: logits as Dream's own generation path computes them -----------------------------------


@torch.no_grad()
def dream_logits(model, ids, attention):
    """Dream's generation_utils._sample: with padding, a [B, 1, N, N] mask that is the outer AND
    of the row mask (padding queries see nothing) and positions counting real tokens (padding at
    1); without, "full" and no positions. Logits shifted right by one (logit i - 1 predicts i),
    position 0 keeping its own."""
    if (attention == 0).any():
        tok_idx = attention.long().cumsum(-1) - 1
        tok_idx.masked_fill_(attention == 0, 1)
        pair = torch.logical_and(attention[:, None, None, :], attention[:, None, :, None])
        logits = model(ids, pair, tok_idx).logits
    else:
        logits = model(ids, "full", None).logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


@pytest.mark.parametrize("padded", [False, True])
def test_dream_logits_equal_its_generation_path(dream, padded):
    prompts = PROMPTS if padded else ["count: 1 2 3", "solve: 4 5 6"]  # equal lengths: no padding
    tokens, attention, _ = encode_prompts(dream.tokenizer, prompts, 8, MASK_ID)
    ids, att = torch.from_numpy(tokens), torch.from_numpy(attention)
    assert bool((~att).any()) == padded
    ours, _ = dream.forward(ids, att)
    theirs = dream_logits(dream.model, ids, att.long())
    # Compare where Dream's shift is defined: real positions after each row's first real token.
    first = att.long().argmax(1)
    pos = torch.arange(att.shape[1])
    check = att & (pos[None] > first[:, None])
    theirs[..., MASK_ID] = float("-inf")
    torch.testing.assert_close(ours[check], theirs[check], rtol=1e-5, atol=1e-5)
    # And a padded row equals the same prompt decoded alone.
    for row, prompt in enumerate(prompts):
        alone, _ = dream.forward(
            *map(torch.from_numpy, encode_prompts(dream.tokenizer, [prompt], 8, MASK_ID)[:2])
        )
        n = alone.shape[1]
        torch.testing.assert_close(ours[row, -n:][1:], alone[0][1:], rtol=1e-4, atol=1e-4)


# -- padding: proven by a probe at load, not assumed ------------------------------------------


def ignore_padding_mask(model) -> None:
    """Make the real LLaDA code behave like its older snapshots (and the copy the UPO paper's code
    ships), whose attention is called with attn_mask=None: padded rows then attend to padding.
    Done by wrapping each block's attention call on this instance; the code is not edited."""
    for block in model.model.transformer.blocks:
        attend = block._scaled_dot_product_attention

        def without_mask(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, attend=attend):
            return attend(q, k, v, None, dropout_p, is_causal)

        block._scaled_dot_product_attention = without_mask


def test_padding_probe_catches_attention_that_ignores_the_padding_mask(model_dirs, capsys):
    import transformers

    from upo.evaluate import padding_safe_batch_size

    exact = HFDenoiser.from_pretrained(model_dirs["llada"], trust_remote_code=True)
    assert exact.probe_padding() and exact.padding_gap < 1e-3
    assert padding_safe_batch_size(exact, 8) == 8

    model = transformers.AutoModel.from_pretrained(model_dirs["llada"], trust_remote_code=True)
    ignore_padding_mask(model)
    leaky = HFDenoiser(model, exact.tokenizer)
    assert not leaky.probe_padding() and leaky.padding_gap > 0.05
    assert padding_safe_batch_size(leaky, 8) == 1  # decoded one prompt at a time
    leaky.allow_unpadded_batching = True
    assert padding_safe_batch_size(leaky, 8) == 8
    leaky.allow_unpadded_batching = False
    # Without the probe's verdict, batching would change the answers; with it, none changes.
    policy = make_rule("confidence")
    batched = generate_tokens(leaky, PROMPTS, policy, 16, 8, 8, batch_size=4)
    alone = [generate_tokens(leaky, [p], policy, 16, 8, 8)[0] for p in PROMPTS]
    assert [r.tolist() for r in batched] == [r.tolist() for r in alone]
    leaky.padding_exact = True  # pretend it had passed: padded rows now see the padding
    mixed = generate_tokens(leaky, PROMPTS, policy, 16, 8, 8, batch_size=4)
    assert [r.tolist() for r in mixed] != [r.tolist() for r in alone]


@pytest.fixture
def leaky_loads(monkeypatch):
    """Every model transformers loads from here on ignores the padding mask, as old LLaDA."""
    import transformers

    load = transformers.AutoModel.from_pretrained

    def leaky_load(*args, **kwargs):
        model = load(*args, **kwargs)
        ignore_padding_mask(model)
        return model

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", leaky_load)


def test_load_says_in_one_line_when_padding_changes_the_logits(model_dirs, leaky_loads, capsys):
    mdm = load_mdm(f"hf:{model_dirs['llada']}", options={"trust_remote_code": True})
    err = capsys.readouterr().err.strip().splitlines()
    assert not mdm.padding_exact
    assert len(err) == 1 and "left padding changes this model's logits" in err[0]
    assert "one prompt at a time" in err[0]


def test_each_batch_is_padded_to_its_own_longest_prompt(llada):
    """A batch's columns that are padding in every row are cut before decoding: the long prompt
    in another batch does not widen this one (the model sees no extra padding at all)."""
    from upo.evaluate import decode_in_batches
    from upo.tasks.base import Batch

    prompts = ["a much longer prompt than the others", "hi", "ok"]
    tokens, attention, _ = encode_prompts(llada.tokenizer, prompts, 8, MASK_ID)
    batch = Batch(tokens, tokens * 0 - 1, attention)
    widths = []
    forward = llada.forward

    def recording_forward(ids, mask=None):
        widths.append(ids.shape[1])
        return forward(ids, mask)

    llada.forward = recording_forward
    try:
        out, order, _, _ = decode_in_batches(
            llada, batch, make_rule("confidence"), 1, 2, 0, block_size=8
        )
    finally:
        del llada.forward
    short = encode_prompts(llada.tokenizer, ["hi"], 8, MASK_ID)[0].shape[1]
    assert out.shape == tokens.shape and max(widths) == tokens.shape[1]
    assert short in widths  # "hi" and "ok" ran at their own width
    assert (out[1:, : tokens.shape[1] - short] == tokens[1:, : tokens.shape[1] - short]).all()
    assert (order[1:, : tokens.shape[1] - short] == -1).all()


def test_upo_refuses_padded_rollouts_on_a_model_that_ignores_the_padding_mask(
    model_dirs, leaky_loads, tmp_path
):
    import json

    from upo.errors import UpoError
    from upo.rl.grpo import UPOConfig, train_upo

    data = tmp_path / "countdown.jsonl"
    rows = [{"nums": [3, 8, 1], "target": 24}, {"nums": [2, 5, 7, 30], "target": 100}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = UPOConfig(
        task="countdown",
        mdm=f"hf:{model_dirs['llada']}",
        mdm_options={"trust_remote_code": True, "dtype": "float32", "device": "cpu"},
        task_options={"gen_length": 8, "block_length": 8},
        train_data=str(data),
        init="random",
        policy={"width": 16, "n_heads": 2, "mlp_hidden": 16},
        steps=1,
        prompts_per_step=2,
        group_size=2,
    )
    with pytest.raises(UpoError, match="left padding changes this model's logits"):
        train_upo(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
