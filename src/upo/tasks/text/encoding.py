"""Text <-> tokens for text tasks and text generation: prompts through the tokenizer (and its chat
template), left-padded and followed by the mask tokens the MDM fills; answers back to text."""

from __future__ import annotations

import numpy as np

from ...errors import UpoError


def uses_chat(tokenizer, chat: bool) -> bool:
    """Whether prompts go through the chat template: asked for, and the tokenizer has one."""
    return bool(chat and getattr(tokenizer, "chat_template", None))


def chat_text(tokenizer, prompt: str, system: str | None = None) -> str:
    """`prompt` as a user turn (after an optional system turn) through the chat template, up to
    where the assistant's answer starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, prompt: str, chat: bool = True, system: str | None = None) -> list[int]:
    """Token ids of one prompt, through the tokenizer's chat template when it has one."""
    if uses_chat(tokenizer, chat):
        text = chat_text(tokenizer, prompt, system)
        # the template wrote the special tokens already
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt)["input_ids"])


def pad_id(tokenizer) -> int:
    """The token left padding is made of: the pad token, else EOS, else 0 (attention never sees
    it, but it must be a valid id)."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0


def encode_prompts(
    tokenizer,
    prompts: list[str],
    gen_length: int,
    mask_id: int,
    chat: bool = True,
    system: str | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(tokens [B, L], attention_mask [B, L], prompt lengths): left padding, then gen_length
    mask tokens per item. Left padding puts every item's answer region in the last gen_length
    positions, so semi-autoregressive blocks line up across the batch."""
    if gen_length < 1:
        raise UpoError(f"gen_length must be at least 1, got {gen_length}")
    ids = [prompt_ids(tokenizer, p, chat, system) for p in prompts]
    longest = max((len(i) for i in ids), default=0)
    length = longest + gen_length
    tokens = np.full((len(ids), length), pad_id(tokenizer), dtype=np.int64)
    attention = np.zeros((len(ids), length), dtype=bool)
    for row, seq in enumerate(ids):
        start = longest - len(seq)
        tokens[row, start:longest] = seq
        tokens[row, longest:] = mask_id
        attention[row, start:] = True
    return tokens, attention, [len(i) for i in ids]


def answer_text(tokenizer, ids, eos_ids) -> str:
    """Decoded answer tokens up to (not including) the first EOS / end-of-turn token: an MDM
    fills its whole answer region, and what follows the first EOS is padding."""
    ids = [int(i) for i in ids]
    stops = set(eos_ids)
    for i, t in enumerate(ids):
        if t in stops:
            ids = ids[:i]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)
