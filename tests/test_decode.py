"""Behaviour of the unmasking loop `upo.decode.unmask`."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import SEQ_LEN, SEQ_MASK, SEQ_PAD, make_puzzles, make_tiny
from toy_denoiser import ChainDenoiser
from upo.decode import block_ids, unmask
from upo.errors import UpoError
from upo.policies.base import Choice, Policy
from upo.policies.rules import make_rule

DETERMINISTIC = ["confidence", "margin", "entropy", "left-to-right", "threshold:0.9"]
STOCHASTIC = ["random", "softmax:0.5", "topk-random:3"]
ONE_PER_STEP = ["confidence", "margin", "entropy", "left-to-right", *STOCHASTIC]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_solved_row(puzzles: torch.Tensor, solutions: torch.Tensor) -> torch.Tensor:
    """The puzzles plus one item with nothing to fill, in the middle of the batch."""
    mid = len(puzzles) // 2
    return torch.cat([puzzles[:mid], solutions[:1], puzzles[mid:]])


def record_steps(log: list):
    def on_step(rows, state, choice):
        log.append((rows.clone(), state, choice))

    return on_step


# --- every blank exactly once, givens untouched ----------------------------------------------


@pytest.mark.parametrize("rule", ONE_PER_STEP)
def test_givens_kept_and_every_blank_filled_once(mdm4_any, puzzles4, rule):
    puzzles, solutions = puzzles4
    tokens = with_solved_row(puzzles, solutions)
    traj = unmask(mdm4_any, tokens, make_rule(rule), generator=seeded())
    blank = tokens == 0
    n_blank = blank.sum(1)

    assert torch.equal(traj.tokens[~blank], tokens[~blank])
    assert not (traj.tokens == 0).any()
    assert traj.tokens.max() <= 4
    assert (traj.order[~blank] == -1).all()
    assert (traj.order[blank] >= 0).all()
    assert torch.equal(traj.nfe, n_blank)
    assert traj.positions.shape[1] == traj.logprobs.shape[1] == int(n_blank.max())
    for i in range(len(tokens)):
        n = int(n_blank[i])
        # one position per step, every step used exactly once
        assert sorted(traj.order[i][blank[i]].tolist()) == list(range(n))
        # positions lists the blanks in the order they were revealed, then -1
        revealed = traj.positions[i, :n]
        assert set(revealed.tolist()) == set(blank[i].nonzero().squeeze(1).tolist())
        assert torch.equal(traj.order[i, revealed], torch.arange(n))
        assert (traj.positions[i, n:] == -1).all()
        assert (traj.logprobs[i, n:] == 0).all()


@pytest.mark.parametrize("rule", ["confidence", "random", "softmax:0.5", "topk-random:3"])
@pytest.mark.parametrize("k", [2, 3])
def test_k_per_step(mdm4, puzzles4, rule, k):
    puzzles, _ = puzzles4
    traj = unmask(mdm4, puzzles, make_rule(rule), k=k, generator=seeded())
    blank = puzzles == 0
    n_blank = blank.sum(1)
    assert torch.equal(traj.nfe, (n_blank + k - 1) // k)
    assert torch.equal(traj.tokens[~blank], puzzles[~blank])
    assert not (traj.tokens == 0).any()
    for i in range(len(puzzles)):
        n = int(n_blank[i])
        counts = torch.bincount(traj.order[i][blank[i]], minlength=int(traj.nfe[i]))
        expected = [k] * (n // k) + ([n % k] if n % k else [])
        assert counts.tolist() == expected


def test_k3_confidence_takes_the_three_most_confident(mdm9, puzzles9):
    puzzles, _ = puzzles9
    steps = []
    unmask(mdm9, puzzles, make_rule("confidence"), k=3, on_step=record_steps(steps))
    for _, state, choice in steps:
        conf = state.probs.max(-1).values.masked_fill(~state.candidates, -1.0)
        n_cand = state.candidates.sum(1)
        assert torch.equal(choice.chosen.sum(1), n_cand.clamp(max=3))
        worst_chosen = conf.masked_fill(~choice.chosen, 2.0).min(1).values
        best_unchosen = conf.masked_fill(choice.chosen, -1.0).max(1).values
        assert (worst_chosen >= best_unchosen).all()


def test_nothing_to_fill(mdm4, puzzles4):
    _, solutions = puzzles4
    traj = unmask(mdm4, solutions, make_rule("confidence"))
    assert torch.equal(traj.tokens, solutions)
    assert (traj.order == -1).all()
    assert (traj.nfe == 0).all()
    assert traj.positions.shape == (len(solutions), 0)
    assert traj.logprob.shape == (len(solutions),)
    assert (traj.logprob == 0).all()


def test_k_must_be_positive(mdm4, puzzles4):
    with pytest.raises(ValueError, match="k must be"):
        unmask(mdm4, puzzles4[0], make_rule("confidence"), k=0)


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_max_steps_stops_a_decode_where_the_full_one_would_be(mdm9, puzzles9, steps):
    """A decode cut after `steps` steps is the full decode's first `steps` steps: the same cells
    with the same tokens, the rest still masked, one forward per step."""
    puzzles, _ = puzzles9
    rule = make_rule("confidence")
    full = unmask(mdm9, puzzles, rule)
    cut = unmask(mdm9, puzzles, rule, max_steps=steps)
    revealed = (full.order >= 0) & (full.order < steps)
    assert torch.equal(cut.order, torch.where(revealed, full.order, -1))
    assert torch.equal(
        cut.tokens, torch.where(revealed | (puzzles != mdm9.mask_id), full.tokens, puzzles)
    )
    assert torch.equal(cut.nfe, torch.full_like(cut.nfe, steps))
    assert cut.positions.shape == (len(puzzles), steps)
    # resuming the cut decode finishes it exactly as the uncut one did
    rest = unmask(mdm9, cut.tokens, rule)
    assert torch.equal(rest.tokens, full.tokens)
    assert torch.allclose(cut.token_loglik + rest.token_loglik, full.token_loglik)
    assert torch.equal(cut.nfe + rest.nfe, full.nfe)


def test_max_steps_beyond_the_blanks_is_the_full_decode(mdm4, puzzles4):
    puzzles, _ = puzzles4
    rule = make_rule("confidence")
    full = unmask(mdm4, puzzles, rule)
    long = unmask(mdm4, puzzles, rule, max_steps=puzzles.shape[1])
    for name in ("tokens", "order", "positions", "nfe", "token_loglik"):
        assert torch.equal(getattr(full, name), getattr(long, name)), name


def test_max_steps_must_not_be_negative(mdm4, puzzles4):
    with pytest.raises(ValueError, match="max_steps must be"):
        unmask(mdm4, puzzles4[0], make_rule("confidence"), max_steps=-1)


def test_input_tokens_not_modified(mdm4, puzzles4):
    puzzles, _ = puzzles4
    before = puzzles.clone()
    unmask(mdm4, puzzles, make_rule("random"), generator=seeded())
    assert torch.equal(puzzles, before)


def test_policy_that_chooses_nothing_is_an_error(mdm4, puzzles4):
    class Lazy(Policy):
        name = "lazy"

        def select(self, state, k, generator=None):
            none = torch.zeros_like(state.candidates)
            return Choice(none, torch.zeros(none.shape[0]))

    with pytest.raises(UpoError, match="policy lazy chose no position at step 0"):
        unmask(mdm4, puzzles4[0], Lazy())


class NaNModel:
    """A degenerate MDM: its logits are NaN at every position (as broken weights give)."""

    def __init__(self, mdm):
        self.mdm = mdm

    def __getattr__(self, name):
        return getattr(self.mdm, name)

    def forward(self, tokens, attention_mask=None):
        logits, features = self.mdm.forward(tokens, attention_mask)
        return torch.full_like(logits, float("nan")), features

    __call__ = forward


def test_a_sampled_policy_on_nan_logits_blames_the_model(mdm4, puzzles4):
    with pytest.raises(UpoError, match="MDM returned NaN or inf logits at step 0.*softmax:1"):
        unmask(NaNModel(mdm4), puzzles4[0], make_rule("softmax:1"))


def test_choices_outside_candidates_are_ignored(mdm4, puzzles4):
    """A policy that also marks given cells: only its candidates are filled."""

    class Greedy(Policy):
        name = "everything"

        def select(self, state, k, generator=None):
            everything = torch.ones_like(state.candidates)
            return Choice(everything, torch.zeros(everything.shape[0]))

    puzzles, _ = puzzles4
    traj = unmask(mdm4, puzzles, Greedy())
    given = puzzles != 0
    assert torch.equal(traj.tokens[given], puzzles[given])
    assert (traj.nfe == 1).all()


# --- batching and padding do not change an item's answer ------------------------------------


def assert_same_as_one_by_one(model, tokens, rule, **kw):
    batched = unmask(model, tokens, make_rule(rule), **kw)
    for i in range(len(tokens)):
        alone = unmask(model, tokens[i : i + 1], make_rule(rule), **kw)
        assert torch.equal(alone.tokens[0], batched.tokens[i]), (rule, i)
        assert torch.equal(alone.order[0], batched.order[i]), (rule, i)
        assert torch.equal(alone.nfe[0], batched.nfe[i]), (rule, i)
        s = alone.positions.shape[1]
        assert torch.equal(alone.positions[0], batched.positions[i, :s]), (rule, i)
        assert (batched.positions[i, s:] == -1).all()
    return batched


@pytest.mark.parametrize("rule", DETERMINISTIC)
def test_batched_equals_one_by_one_sudoku4(mdm4_any, puzzles4, rule):
    puzzles, solutions = puzzles4
    assert len(set((puzzles == 0).sum(1).tolist())) > 3  # a mixed batch
    assert_same_as_one_by_one(mdm4_any, with_solved_row(puzzles, solutions), rule)


@pytest.mark.parametrize("rule", DETERMINISTIC)
def test_batched_equals_one_by_one_sudoku9(mdm9_bf16, puzzles9, rule):
    puzzles, _ = puzzles9
    assert_same_as_one_by_one(mdm9_bf16, puzzles, rule)


@pytest.mark.parametrize("rule", ["confidence", "left-to-right"])
def test_batched_equals_one_by_one_with_blocks_and_k(mdm4, puzzles4, rule):
    assert_same_as_one_by_one(mdm4, puzzles4[0], rule, k=2, block_size=3)


def test_rules_give_different_orders(mdm9, puzzles9):
    """Guards the tests above: with these fixtures the rules really disagree."""
    puzzles, _ = puzzles9
    orders = {r: unmask(mdm9, puzzles, make_rule(r)).order for r in DETERMINISTIC[:4]}
    names = list(orders)
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            assert not torch.equal(orders[names[a]], orders[names[b]]), (names[a], names[b])


def seq_items(seed: int = 0):
    """Sequences of different lengths (the longest fills the model's 12 positions) with a few
    masked positions each, tokens 1..6."""
    gen = seeded(seed)
    items = []
    for length in (5, 12, 8, 3, 10):
        tok = torch.randint(1, 7, (length,), generator=gen)
        masked = torch.rand(length, generator=gen) < 0.6
        masked[torch.randint(0, length, (1,), generator=gen)] = True
        items.append(tok.masked_fill(masked, SEQ_MASK))
    return items


def pad(items, pad_id: int):
    tokens = torch.full((len(items), SEQ_LEN), pad_id, dtype=torch.long)
    attention = torch.zeros(len(items), SEQ_LEN, dtype=torch.bool)
    for i, item in enumerate(items):
        tokens[i, : len(item)] = item
        attention[i, : len(item)] = True
    return tokens, attention


def test_padded_forward_matches_unpadded(seq_mdm):
    items = seq_items()
    tokens, attention = pad(items, SEQ_PAD)
    logits, features = seq_mdm.forward(tokens, attention)
    for i, item in enumerate(items):
        alone_logits, alone_features = seq_mdm.forward(item[None], None)
        n = len(item)
        torch.testing.assert_close(logits[i, :n], alone_logits[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(features[i, :n], alone_features[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", DETERMINISTIC)
@pytest.mark.parametrize("pad_id", [SEQ_PAD, 3])
def test_padded_batch_equals_unpadded_one_by_one(seq_mdm, rule, pad_id):
    items = seq_items()
    tokens, attention = pad(items, pad_id)
    batched = unmask(seq_mdm, tokens, make_rule(rule), attention_mask=attention)
    for i, item in enumerate(items):
        n = len(item)
        alone = unmask(seq_mdm, item[None], make_rule(rule))
        assert torch.equal(batched.tokens[i, :n], alone.tokens[0]), (rule, i)
        assert torch.equal(batched.order[i, :n], alone.order[0]), (rule, i)
        assert batched.nfe[i] == alone.nfe[0]
        # padding is left alone and never revealed
        assert (batched.tokens[i, n:] == pad_id).all()
        assert (batched.order[i, n:] == -1).all()
    assert not (batched.tokens[attention] == SEQ_MASK).any()


def test_padding_content_is_invisible(seq_mdm):
    """What sits in the padding must not change the real positions' outputs."""
    items = seq_items(seed=1)
    a_tokens, attention = pad(items, SEQ_PAD)
    b_tokens = a_tokens.clone()
    b_tokens[~attention] = torch.randint(1, 7, (int((~attention).sum()),), generator=seeded(9))
    la, fa = seq_mdm.forward(a_tokens, attention)
    lb, fb = seq_mdm.forward(b_tokens, attention)
    torch.testing.assert_close(la[attention], lb[attention], rtol=0, atol=1e-6)
    torch.testing.assert_close(fa[attention], fb[attention], rtol=0, atol=1e-6)


# --- semi-autoregressive blocks ----------------------------------------------------------------


def test_block_ids_count_from_first_masked_position():
    masked = torch.tensor([[0, 0, 1, 0, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert block_ids(masked, 2).tolist() == [[0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2, 3, 3]]
    assert (block_ids(masked, None) == 0).all()


@pytest.mark.parametrize("block_size", [1, 2, 3, 5])
@pytest.mark.parametrize("rule", ["confidence", "random", "softmax:0.5"])
def test_blocks_are_revealed_in_order(mdm4, puzzles4, block_size, rule):
    puzzles, _ = puzzles4
    steps = []
    traj = unmask(
        mdm4,
        puzzles,
        make_rule(rule),
        block_size=block_size,
        generator=seeded(),
        on_step=record_steps(steps),
    )
    blank = puzzles == 0
    assert torch.equal(traj.nfe, blank.sum(1))
    assert not (traj.tokens == 0).any()
    for i in range(len(puzzles)):
        pos = blank[i].nonzero().squeeze(1)
        blk = (pos - pos[0]) // block_size
        order = traj.order[i, pos]
        ids = blk.unique().tolist()
        for a, b in zip(ids, ids[1:]):
            assert order[blk == a].max() < order[blk == b].min(), (i, a, b)
    for _, state, choice in steps:
        assert not (state.candidates & ~state.masked).any()
        assert not (state.candidates & ~state.block).any()
        # within the current block, every masked position is a candidate
        assert torch.equal(state.candidates, state.masked & state.block)
        assert not (choice.chosen & ~state.candidates).any()


def test_one_block_is_the_same_as_no_blocks(mdm4, puzzles4):
    puzzles, _ = puzzles4
    a = unmask(mdm4, puzzles, make_rule("confidence"))
    b = unmask(mdm4, puzzles, make_rule("confidence"), block_size=16)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.order, b.order)


def test_block_size_one_is_left_to_right(mdm4, puzzles4):
    puzzles, _ = puzzles4
    a = unmask(mdm4, puzzles, make_rule("confidence"), block_size=1)
    b = unmask(mdm4, puzzles, make_rule("left-to-right"))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.order, b.order)


# --- sampling --------------------------------------------------------------------------------


def test_token_temperature_is_reproducible(mdm9, puzzles9):
    puzzles, _ = puzzles9
    kw = dict(token_temperature=1.0)
    a = unmask(mdm9, puzzles, make_rule("softmax:0.5"), generator=seeded(3), **kw)
    b = unmask(mdm9, puzzles, make_rule("softmax:0.5"), generator=seeded(3), **kw)
    c = unmask(mdm9, puzzles, make_rule("softmax:0.5"), generator=seeded(4), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.order, b.order)
    assert torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)
    blank = puzzles == 0
    assert torch.equal(a.tokens[~blank], puzzles[~blank])
    assert not (a.tokens == 0).any()


def test_sampled_tokens_differ_from_greedy(mdm9, puzzles9):
    puzzles, _ = puzzles9
    greedy = unmask(mdm9, puzzles, make_rule("left-to-right"))
    hot = unmask(
        mdm9, puzzles, make_rule("left-to-right"), token_temperature=1.0, generator=seeded()
    )
    cold = unmask(
        mdm9, puzzles, make_rule("left-to-right"), token_temperature=1e-4, generator=seeded()
    )
    assert not torch.equal(greedy.tokens, hot.tokens)
    assert torch.equal(greedy.tokens, cold.tokens)


def test_stochastic_rule_is_reproducible_and_seed_dependent(mdm4, puzzles4):
    puzzles, _ = puzzles4
    a = unmask(mdm4, puzzles, make_rule("random"), generator=seeded(1))
    b = unmask(mdm4, puzzles, make_rule("random"), generator=seeded(1))
    c = unmask(mdm4, puzzles, make_rule("random"), generator=seeded(2))
    assert torch.equal(a.order, b.order)
    assert not torch.equal(a.order, c.order)


# --- log-probabilities -----------------------------------------------------------------------


@pytest.mark.parametrize("rule", STOCHASTIC)
def test_step_logprob_is_the_rules_probability_of_the_choice(mdm4_any, puzzles4, rule):
    puzzles, _ = puzzles4
    policy = make_rule(rule)
    steps = []
    traj = unmask(mdm4_any, puzzles, policy, generator=seeded(5), on_step=record_steps(steps))
    assert len(steps) == traj.logprobs.shape[1]
    recomputed = torch.zeros_like(traj.logprobs)
    for step, (rows, state, choice) in enumerate(steps):
        assert torch.equal(choice.chosen.sum(1), torch.ones(len(rows), dtype=torch.long))
        logp = make_rule(rule).log_probs(state)
        at_choice = logp[choice.chosen]  # one per active row, in row order
        assert torch.isfinite(at_choice).all()
        torch.testing.assert_close(choice.logprob.float(), at_choice, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(traj.logprobs[rows, step], at_choice, rtol=1e-5, atol=1e-6)
        n_cand = state.candidates.sum(1).float()
        if rule == "random":
            torch.testing.assert_close(at_choice, -torch.log(n_cand))
        if rule == "topk-random:3":
            torch.testing.assert_close(at_choice, -torch.log(n_cand.clamp(max=3)))
        recomputed[rows, step] = at_choice
    torch.testing.assert_close(traj.logprob, traj.logprobs.sum(1))
    torch.testing.assert_close(traj.logprob, recomputed.sum(1), rtol=1e-5, atol=1e-5)
    assert (traj.logprob < 0).all()


@pytest.mark.parametrize("rule", DETERMINISTIC)
def test_deterministic_rules_record_zero_logprob_at_their_argmax(mdm4, puzzles4, rule):
    puzzles, _ = puzzles4
    steps = []
    traj = unmask(mdm4, puzzles, make_rule(rule), on_step=record_steps(steps))
    assert (traj.logprobs == 0).all()
    for _, state, choice in steps:
        logp = make_rule(rule).log_probs(state)
        best = logp.argmax(1)
        assert choice.chosen.gather(1, best[:, None]).all()


def test_random_order_logprob_is_minus_log_factorial(mdm4, puzzles4):
    puzzles, _ = puzzles4
    traj = unmask(mdm4, puzzles, make_rule("random"), generator=seeded())
    n_blank = (puzzles == 0).sum(1).tolist()
    expected = torch.tensor([-math.lgamma(n + 1) for n in n_blank])
    torch.testing.assert_close(traj.logprob, expected, rtol=1e-5, atol=1e-4)


def test_random_order_k2_logprob_is_plackett_luce(mdm4, puzzles4):
    """Uniform over positions, two per step: each step's ordered pair has prob 1/(n (n-1))."""
    puzzles, _ = puzzles4
    steps = []
    unmask(mdm4, puzzles, make_rule("random"), k=2, generator=seeded(), on_step=record_steps(steps))
    for _, state, choice in steps:
        n = state.candidates.sum(1).float()
        two = -torch.log(n) - torch.log((n - 1).clamp(min=1))
        expected = torch.where(n >= 2, two, torch.zeros_like(n))
        torch.testing.assert_close(choice.logprob.float(), expected)


def test_sudoku9_bf16_decodes(mdm9_bf16):
    """Smoke test of a bigger grid in bf16 with a stochastic rule and token sampling."""
    puzzles, _ = make_puzzles("sudoku9", 3, (40, 50), seed=1)
    traj = unmask(
        mdm9_bf16,
        puzzles,
        make_rule("topk-random:3"),
        token_temperature=0.7,
        generator=seeded(),
    )
    assert torch.equal(traj.nfe, (puzzles == 0).sum(1))
    assert not (traj.tokens == 0).any()
    assert torch.isfinite(traj.logprob).all()


def test_other_models_are_independent():
    """Two different random models disagree: the fixtures are not degenerate."""
    puzzles, _ = make_puzzles("sudoku4", 4, (8, 10), seed=3)
    a = unmask(make_tiny("sudoku4", seed=10), puzzles, make_rule("confidence"))
    b = unmask(make_tiny("sudoku4", seed=11), puzzles, make_rule("confidence"))
    assert not torch.equal(a.order, b.order)


@pytest.mark.parametrize("board", [False, True])
def test_learned_policy_padded_batch_equals_one_by_one(seq_mdm, board):
    """The policy network's own attention must not see padding either (a known defect of the
    paper's code: evaluation was only right at batch size 1)."""
    from upo.policies.learned import LearnedPolicy, PolicyConfig, PolicyNet

    torch.manual_seed(0)
    net = PolicyNet(
        PolicyConfig(
            seq_mdm.feature_dim,
            width=16,
            n_heads=2,
            mlp_hidden=16,
            board_vocab=seq_mdm.vocab_size if board else None,
        ),
        bf16=False,
    )
    with torch.no_grad():
        net.mlp[-1].weight.mul_(4.0)  # scores far from flat, so the order really is the net's
    net.eval()
    policy = LearnedPolicy(net, seq_mdm.mask_id)
    items = seq_items(seed=2)
    tokens, attention = pad(items, SEQ_PAD)
    batched = unmask(seq_mdm, tokens, policy, attention_mask=attention)
    for i, item in enumerate(items):
        n = len(item)
        alone = unmask(seq_mdm, item[None], policy)
        assert torch.equal(batched.order[i, :n], alone.order[0]), i
        assert torch.equal(batched.tokens[i, :n], alone.tokens[0]), i


def test_every_denoiser_satisfies_the_protocol():
    """The seam is the protocol: upo's MDM, the HF adapter, the timing wrapper and the test
    model all carry every attribute callers read (no getattr probes with defaults)."""
    from hf_standins import TinyLladaConfig, TinyLladaModel, make_tokenizer
    from upo.models.denoiser import Denoiser, TimedDenoiser
    from upo.models.hf import HFDenoiser
    from upo.models.tiny import TinyConfig, TinyMDM

    tiny = TinyMDM(
        TinyConfig(vocab_size=6, mask_id=5, seq_len=16, d_model=16, n_layers=2, n_heads=2)
    )
    hf = HFDenoiser(TinyLladaModel(TinyLladaConfig()), make_tokenizer())
    models = [tiny, ChainDenoiser(), TimedDenoiser(tiny), hf]
    for model in models:
        assert isinstance(model, Denoiser), type(model).__name__
        assert isinstance(model.device, torch.device)
        assert model.dtype_used in ("bfloat16", "float32")
    assert tiny.seq_len == 16 and models[-1].seq_len is None
    assert models[-1].tokenizer is not None and tiny.tokenizer is None
