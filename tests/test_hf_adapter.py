"""The transformers adapter on tiny random models built from configs (nothing is downloaded):
BERT, ModernBERT, and stand-ins with LLaDA's and Dream's calling conventions."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

from hf_standins import (
    STANDIN_MASK,
    TinyDreamConfig,
    TinyDreamModel,
    TinyLladaConfig,
    TinyLladaModel,
    make_tokenizer,
    save_remote_code_model,
)
from upo.decode import unmask
from upo.errors import UpoError
from upo.models.hf import HFDenoiser, real_positions
from upo.models.registry import load_mdm
from upo.policies.learned import PolicyConfig, PolicyNet
from upo.policies.rules import make_rule
from upo.tasks.text.encoding import answer_text, encode_prompts
from upo.text_generation import generate, steps_to_k

VOCAB = 72
PAD = 0


def sharpen_hf(model, seed):
    """Unit-scale weights for a transformers model: confident, context-dependent outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or p.dim() != 2:
                continue
            scale = 1.0 if "embeddings" in name else p.shape[1] ** -0.5
            if any(k in name for k in ("query", "key", "Wqkv", "decoder")):
                scale *= 3.0  # sharp attention and logits: outputs depend on the context
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def bert():
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    return HFDenoiser(sharpen_hf(BertForMaskedLM(cfg), 1), mask_id=STANDIN_MASK)


def modernbert():
    torch.manual_seed(0)
    cfg = ModernBertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=PAD,
        eos_token_id=1,
        bos_token_id=2,
        cls_token_id=2,
        sep_token_id=1,
        global_attn_every_n_layers=2,
        local_attention=8,
    )
    return HFDenoiser(sharpen_hf(ModernBertForMaskedLM(cfg), 2), mask_id=STANDIN_MASK)


def llada():
    return HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer())


def dream():
    return HFDenoiser(TinyDreamModel(TinyDreamConfig()), make_tokenizer())


MAKERS = {"bert": bert, "modernbert": modernbert, "llada": llada, "dream": dream}


def items(seed=0, n=4):
    """n prompts of different lengths (3..8 tokens) followed by 5 masks each."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(4, 40, (3 + (i * 5) % 6,), generator=gen)
        out.append(torch.cat([prompt, torch.full((5,), STANDIN_MASK)]))
    return out


def pad_batch(seqs, side):
    length = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), length), PAD)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        sl = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        tokens[i, sl] = s
        mask[i, sl] = True
    return tokens, mask


@pytest.mark.parametrize("kind", list(MAKERS))
def test_features_are_the_hidden_states_entering_the_last_layer(kind):
    d = MAKERS[kind]()
    x = torch.randint(4, 40, (2, 9))
    logits, features = d.forward(x, torch.ones_like(x, dtype=torch.bool))
    assert logits.shape == (2, 9, d.vocab_size) and logits.dtype == torch.float32
    assert features.shape == (2, 9, d.feature_dim)
    assert torch.isinf(logits[..., d.mask_id]).all()
    assert not any(p.requires_grad for p in d.model.parameters())
    if kind in ("bert", "modernbert"):
        # transformers' own list of hidden states: [-2] is the input of the last layer.
        ref = d.model(x, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(features, ref)
    else:
        # Recompute by hand: embeddings through every block but the last.
        core = d.model.transformer
        h = core.wte(x)
        pair = torch.ones(2, 1, 9, 9, dtype=torch.bool)
        pos = torch.arange(9).expand(2, 9)
        for block in core.blocks[:-1]:
            h = block(h, pair, pos)
        torch.testing.assert_close(features, h)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_batched_decoding_equals_one_by_one(kind, side):
    """Padding never leaks: a padded batch decodes exactly as each item alone."""
    d = MAKERS[kind]()
    seqs = items(seed=3)
    tokens, mask = pad_batch(seqs, side)
    logits, _ = d.forward(tokens, mask)
    assert torch.isfinite(logits[mask][:, :STANDIN_MASK]).all()
    rule = make_rule("confidence")
    batched = unmask(d, tokens, rule, attention_mask=mask)
    for i, s in enumerate(seqs):
        alone_logits, alone_feat = d.forward(s[None], None)
        b_logits, b_feat = d.forward(tokens[i : i + 1], mask[i : i + 1])
        keep = mask[i]
        torch.testing.assert_close(b_logits[0, keep], alone_logits[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b_feat[0, keep], alone_feat[0], atol=1e-4, rtol=1e-4)
        alone = unmask(d, s[None], rule)
        assert torch.equal(batched.tokens[i, keep], alone.tokens[0])
        assert torch.equal(batched.order[i, keep], alone.order[0])
    # The answers are not all the same: the test would not notice a leak otherwise.
    assert len({tuple(batched.tokens[i, mask[i]][-5:].tolist()) for i in range(len(seqs))}) > 1


def test_padded_positions_are_zero_not_nan():
    d = dream()  # Dream's 4D mask leaves fully masked (NaN) query rows at padding
    tokens, mask = pad_batch(items(), "left")
    logits, features = d.forward(tokens, mask)
    assert not torch.isnan(logits).any() and not torch.isnan(features).any()
    assert (features[~mask] == 0).all()


def test_dream_logits_are_shifted_back_into_line():
    """Same weights: Dream's shifted logits, once realigned, equal LLaDA's aligned ones."""
    a, b = llada(), dream()
    b.model.transformer.load_state_dict(a.model.transformer.state_dict())
    x = torch.randint(4, 40, (2, 7))
    la, fa = a.forward(x)
    lb, fb = b.forward(x)
    torch.testing.assert_close(fa, fb)
    torch.testing.assert_close(la[:, 1:, :STANDIN_MASK], lb[:, 1:, :STANDIN_MASK])
    assert not torch.allclose(la[:, 1:-1], lb[:, 2:])  # not an accident of constant outputs


def test_real_positions_ignore_left_padding():
    mask = torch.tensor([[False, False, True, True], [True, True, True, False]])
    assert real_positions(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 2]]


def test_mask_id_from_argument_then_config_then_tokenizer():
    model = TinyLladaModel(TinyLladaConfig(mask_token_id=50))
    assert HFDenoiser(model, make_tokenizer(), mask_id=7).mask_id == 7
    assert HFDenoiser(model, make_tokenizer()).mask_id == 50  # config beats tokenizer (68)
    model.config.mask_token_id = None
    assert HFDenoiser(model, make_tokenizer()).mask_id == STANDIN_MASK
    with pytest.raises(UpoError, match="no mask token id.*pass mask_id"):
        HFDenoiser(model, make_tokenizer(with_mask=False))
    with pytest.raises(UpoError, match="outside the vocabulary"):
        HFDenoiser(model, mask_id=VOCAB)


def test_llada_sized_mask_id_never_wins():
    """LLaDA's reserved mask id 126336 sits inside a 126464-token vocabulary."""
    cfg = TinyLladaConfig(vocab_size=126464, d_model=8, n_layers=2, n_heads=2, mask_token_id=126336)
    d = HFDenoiser(TinyLladaModel(cfg))
    assert d.mask_id == 126336 and d.vocab_size == 126464 and d.feature_dim == 8
    x = torch.tensor([[5, 9, 126336, 126336]])
    traj = unmask(d, x, make_rule("confidence"))
    assert (traj.tokens != 126336).all() and traj.tokens[0, :2].tolist() == [5, 9]


@pytest.mark.parametrize("kind", ["llada", "dream"])
def test_remote_code_needs_trust_remote_code(tmp_path, kind):
    path = save_remote_code_model(tmp_path / kind, kind)
    with pytest.raises(UpoError, match="trust_remote_code=True") as err:
        HFDenoiser.from_pretrained(str(path))
    assert "\n" not in str(err.value)
    d = HFDenoiser.from_pretrained(str(path), trust_remote_code=True, dtype="float32")
    assert d.convention == kind and d.mask_id == STANDIN_MASK and d.tokenizer is not None
    assert 3 in d.eos_ids  # <|eot_id|> ends a turn
    again = load_mdm(f"hf:{path}", options={"trust_remote_code": True})
    assert again.fingerprint() == d.fingerprint()
    assert load_mdm(path, options={"trust_remote_code": True}).convention == kind


def test_loading_errors_are_one_line(tmp_path):
    with pytest.raises(UpoError) as err:
        HFDenoiser.from_pretrained(str(tmp_path / "missing"))
    assert "\n" not in str(err.value) and "missing" in str(err.value)
    with pytest.raises(UpoError, match="unknown MDM option 'dtpye'"):
        load_mdm(f"hf:{tmp_path}", options={"dtpye": "bfloat16"})
    with pytest.raises(UpoError, match="unknown dtype"):
        HFDenoiser.from_pretrained(str(tmp_path), dtype="bfloat17")


def test_bert_directory_loads_as_masked_lm(tmp_path):
    d = bert()
    d.model.save_pretrained(tmp_path / "bert")
    loaded = load_mdm(tmp_path / "bert", options={"mask_id": STANDIN_MASK})
    assert loaded.convention == "masked-lm"
    x = torch.randint(4, 40, (1, 6))
    torch.testing.assert_close(loaded.forward(x)[0], d.forward(x)[0])
    with pytest.raises(UpoError, match="no mask token id"):
        load_mdm(tmp_path / "bert")  # BERT's config has no mask id and there is no tokenizer


def test_policy_takes_its_width_from_the_denoiser_through_a_projection():
    d = llada()
    net = PolicyNet(PolicyConfig(feature_dim=d.feature_dim, width=16), bf16=False)
    _, features = d.forward(torch.randint(4, 40, (1, 5)))
    assert net.proj.in_features == features.shape[-1]
    # At LLaDA's width the projection keeps the head small (no 4096-wide transformer block).
    big = PolicyNet(PolicyConfig(feature_dim=4096, width=64))
    assert big.num_parameters() < 400_000


def test_text_generation_blocks_eos_and_chat_template():
    d = llada()
    tok = d.tokenizer
    tokens, attention, lengths = encode_prompts(tok, ["hi", "what is 2+2?"], 8, d.mask_id)
    assert tokens.shape[1] == max(lengths) + 8 and (tokens[:, -8:] == d.mask_id).all()
    assert attention.sum(1).tolist() == [n + 8 for n in lengths]
    assert tok.decode(tokens[0][attention[0]][: lengths[0]]) == "<user>hi\n<assistant>"
    # Semi-autoregressive blocks: block 0 is finished before block 1 starts.
    traj = unmask(
        d,
        torch.from_numpy(tokens),
        make_rule("confidence"),
        attention_mask=torch.from_numpy(attention),
        block_size=4,
    )
    order = traj.order[:, -8:]
    assert (order[:, :4].max(1).values < order[:, 4:].min(1).values).all()
    answers = generate(d, ["hi", "what is 2+2?"], make_rule("confidence"), 8, 4, steps=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert steps_to_k(8, 4, 1) == 2
    with pytest.raises(UpoError, match="must divide"):
        steps_to_k(8, 3, 1)
    # LLaDA's generate() needs steps to share out evenly over the blocks: 2 steps, 4 blocks.
    assert steps_to_k(32, 4, 1, 16) == 8
    with pytest.raises(UpoError, match="multiple of the 4 blocks"):
        steps_to_k(32, 2, 1, 8)
    # Stop at the first EOS / end-of-turn: what follows is padding.
    ids = tok("abc")["input_ids"] + [3] + tok("zzz")["input_ids"]
    assert answer_text(tok, ids, d.eos_ids) == "abc"
    assert answer_text(tok, tok("abc")["input_ids"], d.eos_ids) == "abc"
