"""upo's Python API: load an MDM and a policy, decode with `generate`.

    import upo

    mdm = upo.load_mdm("sudoku9-mdm")                 # shipped by name, a directory, or a Hugging Face MDM
    policy = upo.load_policy("sudoku9-policy", mdm)   # or "confidence", "margin", a directory, ...
    out = upo.generate(mdm, puzzles, policy=policy)               # tokens [B, L], mask_id to fill
    out.tokens, out.order, out.nfe

Everything here is a thin layer over the pieces the command line uses: `upo.models.registry.
load_mdm`, `upo.policies.resolve.resolve_policy`, and `upo.evaluate.decode_in_batches` (which runs
`upo.decode.unmask` batch by batch, exactly: an item's answer does not depend on its batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import check_cacheable
from .errors import UpoError
from .evaluate import decode_in_batches
from .models.denoiser import Denoiser
from .policies.base import Policy
from .seeds import check_seed
from .tasks.base import Batch


@dataclass
class GenerateOutput:
    """What `generate` decoded.

    tokens [B, L]: the decoded tokens. For token inputs, the whole rows (what you passed, with
    the `gen_length` appended positions when you asked for them); for text prompts, the
    `gen_length` answer positions only.
    order [B, L]: the step at which each of those positions was filled (0 = first step; -1 for a
    position that was given, never masked).
    nfe [B]: MDM forward calls per item, those a search policy made to choose included.
    token_loglik [B]: the MDM's log-probability of each token it filled, summed per item (how
    likely the MDM finds its own answer).
    texts: for text prompts, and for token inputs with `gen_length` on an MDM with a tokenizer,
    each answer as text, cut at the first end-of-sequence / end-of-turn token; otherwise None.

    The arrays are torch tensors when the input was a tensor, numpy arrays otherwise.
    """

    tokens: Any
    order: Any
    nfe: Any
    token_loglik: Any
    texts: list[str] | None = None


def load_mdm(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    mask_id: int | None = None,
    threads: int | None = None,
    **options,
) -> Denoiser:
    """An MDM behind upo's Denoiser protocol.

    `name_or_path`: one of upo's own checkpoint directories, or a shipped one by name
    (`sudoku9-mdm`, `sudoku4-mdm`, ...; a local directory of that name wins), a
    Hugging Face model directory, a Hub id (`GSAI-ML/LLaDA-8B-Instruct`), or `hf:` + either.
    The keywords are transformers' own: `dtype` ("auto", "bfloat16", "float32", ...),
    `device` (Hugging Face models; default: where transformers loads them, the CPU),
    `trust_remote_code` (LLaDA and Dream need it; never on unless passed), and `mask_id` when
    neither the config nor the tokenizer names the mask token. Further Hugging Face options:
    `convention` ("llada", "dream", "masked-lm"), `confidence` ("float32", or "model" to compute
    confidences as LLaDA's generate() does), `allow_unpadded_batching`. `threads` sets torch's
    CPU threads. upo's own MDMs run on the CPU and take only `dtype` ("auto" uses bfloat16 where
    the CPU has it natively, else float32)."""
    from .models.registry import load_mdm as load_any

    # Only what was asked for is passed on: the loader refuses HF-only options for upo's own MDM.
    given = {"trust_remote_code": trust_remote_code or None, "mask_id": mask_id, "device": device}
    chosen = {name: value for name, value in given.items() if value is not None}
    return load_any(name_or_path, threads, {"dtype": dtype, **chosen, **options})


def load_policy(name_or_path: str | Path | Policy, mdm: Denoiser) -> Policy:
    """An unmasking policy for `mdm`: a hand rule by name ("confidence", "margin", "entropy",
    "random", "left-to-right", "topk-random:K", "softmax:TAU", "threshold:P", "eb:GAMMA", ...),
    the search "lookahead:K[:GATE[:DEPTH]]", or a learned policy's checkpoint directory or
    shipped name such as "sudoku9-policy" (greedy; `DIR@T` samples it at temperature T). A learned policy must have been trained on this MDM.
    A Policy object is returned as it is."""
    if isinstance(name_or_path, Policy):
        return name_or_path
    from .policies.resolve import resolve_policy

    return resolve_policy(str(name_or_path), mdm)


def generate(
    mdm: Denoiser,
    inputs: str | Sequence[str] | torch.Tensor | np.ndarray | Sequence[Sequence[int]],
    policy: str | Path | Policy | None = None,
    *,
    gen_length: int | None = None,
    block_length: int | None = None,
    steps: int | None = None,
    k: int | None = None,
    threshold: float | None = None,
    token_temperature: float = 0.0,
    attention_mask: torch.Tensor | np.ndarray | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    chat: bool = True,
    system: str | None = None,
    progress: Callable[[int], object] | None = None,
    cache: str = "none",
) -> GenerateOutput:
    """Decode `inputs` with `mdm`, revealing positions in the order `policy` chooses.

    inputs:
      - text prompts (a string or a list of them; the MDM needs a tokenizer): each goes through
        the chat template (`chat=False` to skip it; `system` adds a system turn) and is followed
        by `gen_length` masks (default 128);
      - a token batch [B, L] (tensor, array or equal-length lists) with `mdm.mask_id` at the
        positions to fill, e.g. Sudoku puzzles; `gen_length` appends that many masks to every
        row; `attention_mask` [B, L] (False = padding) for a left-padded batch;
      - token lists of different lengths (prompt ids): they are left-padded, as text prompts
        are (for models whose positions count real tokens, as the Hugging Face adapter's do).
    policy: a name or checkpoint directory (see `load_policy`) or a Policy; default
      "confidence" (max-confidence), or "threshold:P" when `threshold` is given.
    block_length: semi-autoregressive blocks of that many positions, counted from each row's
      first masked position (None: one block).
    steps: LLaDA's `steps`: gen_length / steps positions per step (it must divide gen_length and
      be a multiple of the number of blocks). Or `k` positions per step (default 1). Or
      `threshold`: Fast-dLLM's parallel rule, every position whose confidence exceeds it (at
      least one) per step.
    token_temperature: 0 fills each position with the MDM's most likely token; above 0 samples
      it at that temperature (seeded by `seed`, as are sampled policies).
    batch_size: items per MDM forward (default 64, or 8 for an MDM with a tokenizer).
    progress: called with the number of items finished after each batch (e.g. tqdm's update).
    cache: "none" (default, exact), "prefix" or "dual": block-wise key/value caching as in
      Fast-dLLM (docs/cache.md): the MDM runs whole once per block and, inside it, only on the
      block ("dual") or the block and the positions after it ("prefix"), reusing the other
      positions' keys and values. Faster and approximate; for LLaDA, Dream and upo's own MDMs.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    is_text = isinstance(inputs, Sequence) and len(inputs) > 0 and isinstance(inputs[0], str)
    if threshold is not None and (k is not None or steps is not None):
        raise UpoError("threshold chooses how many positions a step fills: give it without k/steps")
    if k is not None and (k < 1 or steps is not None):
        raise UpoError(f"k must be at least 1 and given without steps, got k={k}, steps={steps}")
    if gen_length is not None and gen_length < 1:
        raise UpoError(f"gen_length must be at least 1, got {gen_length}")
    if block_length is not None and block_length < 1:
        raise UpoError(f"block_length must be at least 1, got {block_length}")
    if steps is not None and steps < 1:
        raise UpoError(f"steps must be at least 1, got {steps}")
    if not 0.0 <= token_temperature < float("inf"):  # also refuses NaN
        raise UpoError(f"token_temperature must be 0 or more, got {token_temperature}")
    if batch_size is None:
        batch_size = 8 if mdm.tokenizer is not None else 64
    if batch_size < 1:
        raise UpoError(f"batch_size must be at least 1, got {batch_size}")
    seed = check_seed(seed)
    check_cacheable(mdm, cache)
    policy = _policy(policy, threshold, mdm)
    as_torch = isinstance(inputs, torch.Tensor)
    if is_text:
        if any(not isinstance(p, str) for p in inputs):
            raise UpoError("inputs mix text prompts and other things")
        if mdm.tokenizer is None:
            raise UpoError("text prompts need an MDM with a tokenizer; give token ids instead")
        if attention_mask is not None:
            raise UpoError("attention_mask is for token inputs; text prompts are padded by upo")
        from .tasks.text.encoding import encode_prompts

        gen_length = 128 if gen_length is None else gen_length
        tokens, attention, _ = encode_prompts(
            mdm.tokenizer, list(inputs), gen_length, mdm.mask_id, chat, system
        )
    else:
        tokens, attention = _token_batch(inputs, attention_mask, mdm, gen_length)
    _check_tokens(tokens, attention, mdm)
    answer = slice(-gen_length, None) if gen_length else slice(None)
    if block_length is not None and gen_length and gen_length % block_length:
        raise UpoError(f"block_length {block_length} must divide gen_length {gen_length}")
    per_step = _positions_per_step(tokens, attention, mdm.mask_id, gen_length, block_length, steps)
    policy.to(mdm.device)
    batch = Batch(tokens, np.full_like(tokens, -1), attention)
    out, order, nfe, loglik = decode_in_batches(
        mdm,
        batch,
        policy,
        batch_size,
        per_step if per_step is not None else (k or 1),
        seed,
        token_temperature,
        progress=progress,
        block_size=block_length,
        cache=cache,
    )
    texts = None
    if mdm.tokenizer is not None and gen_length:
        from .tasks.text.encoding import answer_text

        texts = [answer_text(mdm.tokenizer, row, mdm.eos_ids) for row in out[:, answer]]
    if is_text:
        out, order = out[:, answer], order[:, answer]
    arrays = (out, order, nfe, loglik)
    if as_torch:
        arrays = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return GenerateOutput(*arrays, texts=texts)


def _policy(policy, threshold: float | None, mdm: Denoiser) -> Policy:
    if threshold is not None:
        if policy is not None:
            raise UpoError(
                f"threshold={threshold} is the policy threshold:{threshold}; give it or a policy"
            )
        if not 0 < threshold <= 1:
            raise UpoError(f"threshold must be in (0, 1], got {threshold}")
        policy = f"threshold:{threshold}"
    return load_policy("confidence" if policy is None else policy, mdm)


def _token_batch(inputs, attention_mask, mdm: Denoiser, gen_length: int | None):
    """(tokens int64 [B, L], attention bool [B, L]) of a token input, left-padded when its rows
    differ in length, with gen_length masks appended to every row."""
    if isinstance(inputs, torch.Tensor):
        tokens = inputs.detach().cpu().numpy()
    elif isinstance(inputs, np.ndarray):
        tokens = inputs
    else:
        rows = [np.asarray(row) for row in inputs]
        if not rows:
            raise UpoError("inputs is empty")
        if any(row.ndim != 1 for row in rows):
            raise UpoError("token inputs must be a [batch, length] array or a list of id lists")
        for i, row in enumerate(rows):
            # np.asarray turns [1.5, 2] into floats and ["a", 2] into strings: either would be
            # cast (or fail) inside the padding below instead of being named here.
            if row.size and not np.issubdtype(row.dtype, np.integer):
                raise UpoError(f"inputs[{i}]: token ids must be integers, got {row.dtype}")
        longest = max(len(row) for row in rows)
        if any(len(row) != longest for row in rows):
            if attention_mask is not None:
                raise UpoError("rows of different lengths are padded by upo: drop attention_mask")
            tokens = np.zeros((len(rows), longest), dtype=np.int64)
            attention = np.zeros((len(rows), longest), dtype=bool)
            for i, row in enumerate(rows):
                tokens[i, longest - len(row) :] = row
                attention[i, longest - len(row) :] = True
            return _append_masks(tokens, attention, mdm.mask_id, gen_length)
        tokens = np.stack(rows) if longest else np.zeros((len(rows), 0), dtype=np.int64)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or len(tokens) == 0:
        raise UpoError(f"token inputs must be [batch, length], got shape {tuple(tokens.shape)}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise UpoError(f"token inputs must be integers, got {tokens.dtype}")
    tokens = tokens.astype(np.int64)
    if attention_mask is None:
        attention = np.ones(tokens.shape, dtype=bool)
    else:
        if isinstance(attention_mask, torch.Tensor):
            attention_mask = attention_mask.detach().cpu().numpy()
        attention = np.asarray(attention_mask).astype(bool)
        if attention.ndim == 1:
            attention = attention[None]
        if attention.shape != tokens.shape:
            raise UpoError(f"attention_mask has shape {attention.shape}, the tokens {tokens.shape}")
    return _append_masks(tokens, attention, mdm.mask_id, gen_length)


def _append_masks(tokens, attention, mask_id: int, gen_length: int | None):
    if not gen_length:
        return tokens, attention
    b = len(tokens)
    tokens = np.concatenate([tokens, np.full((b, gen_length), mask_id, dtype=np.int64)], 1)
    attention = np.concatenate([attention, np.ones((b, gen_length), dtype=bool)], 1)
    return tokens, attention


def _check_tokens(tokens: np.ndarray, attention: np.ndarray, mdm: Denoiser) -> None:
    real = tokens[attention]
    if real.size and (real.min() < 0 or real.max() >= mdm.vocab_size):
        bad = int(real.min() if real.min() < 0 else real.max())
        raise UpoError(f"token id {bad} is outside the MDM's vocabulary of {mdm.vocab_size}")
    if mdm.seq_len is not None and tokens.shape[1] != mdm.seq_len:
        raise UpoError(
            f"this MDM takes sequences of exactly {mdm.seq_len} tokens, got {tokens.shape[1]}"
        )


def _positions_per_step(tokens, attention, mask_id, gen_length, block_length, steps):
    """k from LLaDA's `steps` (None when steps is None), as steps_to_k."""
    if steps is None:
        return None

    if gen_length is None:
        masked = ((tokens == mask_id) & attention).sum(1)
        if len(set(masked.tolist())) != 1:
            raise UpoError("steps needs the same number of masked positions in every row; give k")
        gen_length = int(masked[0])
        if block_length is not None and gen_length % block_length:
            raise UpoError(
                f"block_length {block_length} must divide the {gen_length} masked positions"
            )
    return steps_to_k(gen_length, steps, 1, block_length)


def steps_to_k(gen_length: int, steps: int | None, k: int, block_length: int | None = None) -> int:
    """Positions revealed per step: gen_length / steps when steps is given (LLaDA's `steps`).
    As in LLaDA's generate(), steps are shared out evenly over the blocks; and with steps
    dividing gen_length every step of a block reveals the same number of positions (LLaDA's
    schedule then equals upo's fixed k; uneven schedules are refused, not approximated)."""
    if steps is None:
        return k
    if steps < 1 or gen_length % steps:
        raise UpoError(f"steps {steps} must divide gen_length {gen_length}")
    n_blocks = gen_length // block_length if block_length else 1
    if steps % n_blocks:
        raise UpoError(
            f"steps {steps} must be a multiple of the {n_blocks} blocks "
            f"(gen_length {gen_length} / block_length {block_length}), as in LLaDA's generate()"
        )
    return gen_length // steps
