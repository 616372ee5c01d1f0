"""Large Hugging Face MDMs (LLaDA, Dream, any AutoModelForMaskedLM) as a Denoiser.

The three calling conventions differ in how padding and positions are passed and in how logits
line up with the input:
- "masked-lm" (BERT, ModernBERT, ...): `model(input_ids, attention_mask, position_ids)`, logit i
  predicts token i. Position ids count real tokens only, so left padding does not shift them.
- "llada": `model(input_ids, attention_mask=...).logits`, logit i predicts token i; the mask
  token is a reserved id (126336) named in the config. Positions are rotary (relative), so left
  padding needs no position ids.
- "dream": `model(input_ids, attention_mask, position_ids)` with a [B, 1, L, L] boolean mask (or
  "full" when nothing is padded) and position ids counting real tokens; logit i predicts token
  i + 1 (Dream started from an autoregressive model), so logits are shifted right by one.

Features are the hidden states entering the last layer, captured by a forward pre-hook during the
same forward call: asking for all hidden states would keep every layer's activations alive.
The model's weights are frozen; gradients never reach it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

import torch
from torch import nn

from ..errors import UpoError
from . import hf_cache

CONVENTIONS = ("masked-lm", "llada", "dream")
# HFDenoiser.from_pretrained's options and the exact type each must have, the one table every
# loader checks against (upo.models.registry.check_hf_options): a quoted "false" from YAML or
# --mdm-option must never turn trust_remote_code on. None: leave it to the model.
HF_OPTIONS = {
    "trust_remote_code": (bool,),
    "dtype": (str, torch.dtype),
    "device": (str, torch.device),
    "mask_id": (int, type(None)),
    "convention": (str, type(None)),
    "confidence": (str,),
    "allow_unpadded_batching": (bool,),
    "load_in_4bit": (bool,),
}
CONFIDENCE_MODES = ("float32", "model")
END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|endoftext|>")


def detect_convention(config) -> str:
    model_type = str(getattr(config, "model_type", "") or "").lower()
    if model_type.startswith("llada"):
        return "llada"
    if model_type.startswith("dream"):
        return "dream"
    return "masked-lm"


def resolve_mask_id(
    explicit: int | None, config, tokenizer, source: str, config_file: dict | None = None
) -> int:
    """The mask token id: the explicit argument, else the model config, else the tokenizer.

    `config_file`: the config.json the model was loaded from, when there is one. Only a
    mask_token_id it names counts as the config's: a config class fills in its own default for
    a missing key (LLaDA's 50256, Dream's 151666), which belongs to no tokenizer in particular,
    and must not win over the tokenizer's mask token."""
    if explicit is not None:
        return int(explicit)
    if config_file is not None:
        from_config = config_file.get("mask_token_id")
    else:  # a config built in memory: what its maker set
        from_config = getattr(config, "mask_token_id", None)
    if isinstance(from_config, int) and not isinstance(from_config, bool):
        return from_config
    from_tokenizer = getattr(tokenizer, "mask_token_id", None) if tokenizer is not None else None
    if isinstance(from_tokenizer, int):
        return from_tokenizer
    raise UpoError(
        f"{source}: no mask token id: the model config has no mask_token_id and "
        f"{'the tokenizer has no mask token' if tokenizer is not None else 'there is no tokenizer'}; "
        "pass mask_id explicitly (LLaDA uses 126336)"
    )


def config_file(transformers, path_or_id: str) -> dict:
    """The keys config.json itself sets (not the config class's defaults for the others)."""
    try:
        raw, _ = transformers.PretrainedConfig.get_config_dict(path_or_id)
    except (OSError, ValueError):  # AutoConfig has just read it: not expected
        return {}
    return raw


def find_last_layer(model: nn.Module, n_layers: int | None) -> nn.Module:
    """The last block of the model's main stack of layers: the ModuleList with as many entries
    as the config has layers, else the longest ModuleList."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise UpoError(f"{type(model).__name__}: no list of layers found to take features from")
    exact = [m for m in lists if n_layers is not None and len(m) == n_layers]
    stack = exact[0] if exact else max(lists, key=len)
    return stack[-1]


def _config_int(config, *names) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] position of each token among the real tokens of its row (padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def load_tokenizer(path_or_id: str, trust_remote_code: bool = False):
    """The model's tokenizer, or None when it has none (a model without tokenizer files still
    decodes token ids). A local tokenizer.json whose tokenizer_config.json names a class this
    transformers does not know (newer transformers write `TokenizersBackend`) is read as a
    fast tokenizer with the special tokens and chat template the directory names."""
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(
            path_or_id, trust_remote_code=trust_remote_code
        )
    except Exception:  # optional: missing files, a missing extra (sentencepiece), a new class
        pass
    directory = Path(path_or_id)
    if not (directory / "tokenizer.json").is_file():
        return None
    try:
        settings = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        settings = {}
    special = {
        name: value
        for name in ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")
        if isinstance(value := settings.get(name), str)
    }
    extra = settings.get("extra_special_tokens") or settings.get("additional_special_tokens")
    if isinstance(extra, list) and all(isinstance(t, str) for t in extra):
        special["additional_special_tokens"] = extra
    try:
        tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_file=str(directory / "tokenizer.json"), **special
        )
    except Exception as err:  # the tokenizers library's own errors are plain Exceptions
        # The directory ships a tokenizer that cannot be read (truncated, not JSON): that is
        # the error to report, not "this model has no tokenizer" later on.
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UpoError(
            f"{directory / 'tokenizer.json'}: cannot read the tokenizer ({why:.200})"
        ) from None
    template = directory / "chat_template.jinja"
    if template.is_file():
        tokenizer.chat_template = template.read_text()
    elif isinstance(settings.get("chat_template"), str):
        tokenizer.chat_template = settings["chat_template"]
    return tokenizer


class HFDenoiser:
    """A frozen transformers model behind the Denoiser protocol.

    forward(tokens, attention_mask) runs the model on its own device and returns (logits float32
    with the mask logit at -inf, features) on the device the tokens came from: decoding on GPU
    keeps everything there, CPU-side callers get CPU tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer=None,
        mask_id: int | None = None,
        convention: str | None = None,
        name: str = "",
        confidence: str = "float32",
        allow_unpadded_batching: bool = False,
    ):
        config = getattr(model, "config", None)
        self.name = name or str(getattr(config, "_name_or_path", "") or type(model).__name__)
        self.convention = convention or detect_convention(config)
        if self.convention not in CONVENTIONS:
            raise UpoError(
                f"unknown calling convention {self.convention!r}; valid: {', '.join(CONVENTIONS)}"
            )
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.mask_id = resolve_mask_id(mask_id, config, tokenizer, self.name)
        self.vocab_size = self._vocab_size(config)
        if not 0 <= self.mask_id < self.vocab_size:
            raise UpoError(
                f"{self.name}: mask id {self.mask_id} is outside the vocabulary of {self.vocab_size}"
            )
        self.feature_dim = _config_int(config, "hidden_size", "d_model", "n_embd", "dim")
        if self.feature_dim is None:
            raise UpoError(f"{self.name}: the config names no hidden size (hidden_size/d_model)")
        n_layers = _config_int(config, "num_hidden_layers", "n_layers", "num_layers")
        self._n_layers = n_layers
        self._captured: torch.Tensor | None = None
        self._hook = self.last_layer().register_forward_pre_hook(self._capture, with_kwargs=True)
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params
        self.eos_ids = [i for i in self._eos_ids(model, tokenizer) if i != self.mask_id]
        self.seq_len = None  # any length up to max_length
        # The longest sequence the model was built for: longer ones run, but past the positions
        # it was trained on (or past its position table), so their answers mean nothing.
        self.max_length = _config_int(
            config, "max_sequence_length", "max_position_embeddings", "n_positions"
        )
        self.dtype_note = ""
        if confidence not in CONFIDENCE_MODES:
            raise UpoError(
                f"confidence must be one of {', '.join(CONFIDENCE_MODES)}, got {confidence!r:.40}"
            )
        # "model": confidences as LLaDA's generate() computes them, to reproduce its decodes
        # exactly: the softmax in the model's dtype (bf16 rounds near-ties into ties) and ties
        # broken by torch.topk (StepState.softmax_dtype, topk_ties). "float32": upo's own, a
        # float32 softmax and ties to the lowest position, batch-independent.
        self.softmax_dtype = None if confidence == "float32" else self.dtype
        self.topk_ties = confidence == "model"
        self.allow_unpadded_batching = bool(allow_unpadded_batching)
        self.padding_exact = True
        self.padding_gap = 0.0

    def last_layer(self) -> nn.Module:
        """The model's last layer: the module whose input is the features forward() returns
        (the hidden states entering it, captured by a forward pre-hook on it)."""
        return find_last_layer(self.model, self._n_layers)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def dtype_used(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def pads_batches(self) -> bool:
        return self.padding_exact or self.allow_unpadded_batching

    def probe_padding(self) -> bool:
        """Whether left padding leaves a prompt's logits unchanged: one prompt decoded alone and
        left-padded beside a longer one, in one forward each. Older LLaDA snapshots (and the copy
        the UPO paper's code ships) call attention with attn_mask=None, so their padded rows see
        the padding; batching prompts of different lengths then changes the answers. Sets
        `padding_exact` and `padding_gap` (the largest logit difference, in units of the logits'
        spread) and returns padding_exact."""
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, self.vocab_size, (12,), generator=gen)
        ids[ids == self.mask_id] = (self.mask_id + 1) % self.vocab_size
        ids[-4:] = self.mask_id  # decoding runs on prompts followed by masks
        short = ids[4:]
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad = pad if isinstance(pad, int) else 0
        batch = torch.stack([ids, torch.cat([torch.full((4,), pad), short])])
        attention = torch.ones_like(batch, dtype=torch.bool)
        attention[1, :4] = False
        padded, _ = self.forward(batch.to(self.device), attention.to(self.device))
        alone, _ = self.forward(short[None].to(self.device))
        self._check_logits(alone)
        a, b = padded[1, 4:].float().cpu(), alone[0].float().cpu()
        finite = torch.isfinite(a) & torch.isfinite(b)
        spread = float(b[finite].std()) if finite.any() else 1.0
        # The mean, not the largest, difference: a leak moves every logit, while the rounding of
        # a padding-exact model in bf16 (other batch shapes, other kernels) moves a few of a
        # large vocabulary's by more than it moves them on average.
        self.padding_gap = float((a - b)[finite].abs().mean()) / max(spread, 1e-6)
        self.padding_exact = self.padding_gap < 0.05
        return self.padding_exact

    def _check_logits(self, logits: torch.Tensor) -> None:
        """Refuse a model whose logits hold NaN or +inf (weights that are NaN or inf, or
        overflow in its dtype): it would decode garbage without a word. -inf is a legitimate
        logit (the mask token's is always -inf). Checked on the probe's forward at load, which
        any NaN weight on the path reaches, instead of scanning billions of weights."""
        broken = torch.isnan(logits) | torch.isposinf(logits)
        if bool(broken.any()):
            raise UpoError(
                f"{self.name}: the model's logits hold NaN or inf on a test input "
                f"({int(broken.sum())} of {broken.numel()} values): its weights are damaged or "
                f"overflow in {self.dtype_used}"
            )

    def _vocab_size(self, config) -> int:
        head = None
        try:
            head = self.model.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            head = None
        if isinstance(head, nn.Linear):
            return head.out_features
        size = _config_int(config, "vocab_size", "embedding_size")
        if size is None:
            raise UpoError(f"{self.name}: the config names no vocab_size")
        return size

    @staticmethod
    def _eos_ids(model, tokenizer) -> list[int]:
        """Token ids that end an answer: the EOS of the config, generation config and tokenizer,
        and the end-of-turn tokens of chat models (LLaDA-Instruct, Dream-Instruct) when the
        vocabulary has them."""
        ids: set[int] = set()
        sources = (getattr(model, "config", None), getattr(model, "generation_config", None))
        for source in (*sources, tokenizer):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(v for v in value if isinstance(v, int))
        if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
            vocab = tokenizer.get_vocab()
            ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
        return sorted(ids)

    def _capture(self, module, args, kwargs):
        hidden = args[0] if args and torch.is_tensor(args[0]) else kwargs.get("hidden_states")
        self._captured = hidden

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        trust_remote_code: bool = False,
        dtype: str | torch.dtype = "auto",
        device: str | torch.device | None = None,
        mask_id: int | None = None,
        convention: str | None = None,
        confidence: str = "float32",
        allow_unpadded_batching: bool = False,
        load_in_4bit: bool = False,
    ) -> HFDenoiser:
        """Load a model (and its tokenizer when there is one) from a local directory or the Hub.

        LLaDA and Dream ship their model code with the weights: they only load with
        trust_remote_code=True, which is never turned on unless passed here. `load_in_4bit`:
        NF4 weights through bitsandbytes on CUDA (models/quantize.py), refused elsewhere before
        anything is read."""
        if load_in_4bit:
            from .quantize import check_4bit

            check_4bit(device)
        try:
            import transformers
        except ImportError:
            raise UpoError("Hugging Face models need transformers: pip install 'upo[hf]'") from None
        path_or_id = str(path_or_id)
        if isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise UpoError(f"unknown dtype {dtype!r} (e.g. bfloat16, float16, float32, auto)")
            dtype = getattr(torch, dtype)
        try:
            config = transformers.AutoConfig.from_pretrained(
                path_or_id, trust_remote_code=trust_remote_code
            )
            convention = convention or detect_convention(config)
            auto = (
                transformers.AutoModelForMaskedLM
                if convention == "masked-lm"
                else transformers.AutoModel
            )
            quantized = {}
            if load_in_4bit:  # placed on the device as it loads: a 4-bit model cannot be moved
                from .quantize import quantization_config

                quantized = {
                    "quantization_config": quantization_config(transformers),
                    "device_map": {"": str(device)},
                }
            # safetensors only: a model that ships only pytorch_model.bin (a pickle) is refused.
            model = auto.from_pretrained(
                path_or_id,
                config=config,
                trust_remote_code=trust_remote_code,
                dtype=dtype,
                use_safetensors=True,
                **quantized,
            )
        except ValueError as err:
            text = str(err)
            if "trust_remote_code" in text:
                raise UpoError(
                    f"{path_or_id}: this model ships its own code; load it with "
                    "trust_remote_code=True (--trust-remote-code) only if you trust that code"
                ) from None
            raise UpoError(f"{path_or_id}: cannot load model ({text.splitlines()[0]})") from None
        except OSError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UpoError(
                f"{path_or_id}: cannot load model ({first}); offline, give a local directory"
            ) from None
        tokenizer = load_tokenizer(path_or_id, trust_remote_code)
        vocab = _config_int(config, "vocab_size", "embedding_size")
        if tokenizer is not None and vocab and len(tokenizer) < vocab // 2:
            # transformers builds a near-empty tokenizer when a directory has no tokenizer
            # files; its ids (a [MASK] among 5 tokens) do not belong to this model.
            tokenizer = None
        mask_id = resolve_mask_id(
            mask_id, config, tokenizer, path_or_id, config_file(transformers, path_or_id)
        )
        if device is not None and not load_in_4bit:
            model = model.to(device)
        denoiser = cls(
            model,
            tokenizer,
            mask_id=mask_id,
            convention=convention,
            name=path_or_id,
            confidence=confidence,
            allow_unpadded_batching=allow_unpadded_batching,
        )
        if not denoiser.probe_padding():
            action = (
                "batching anyway (allow_unpadded_batching)"
                if denoiser.allow_unpadded_batching
                else "decoding one prompt at a time (allow_unpadded_batching: true to batch anyway)"
            )
            print(
                f"upo: {path_or_id}: left padding changes this model's logits (on average by "
                f"{denoiser.padding_gap:.2f} of their spread, as when attention ignores the "
                f"padding mask: LLaDA snapshots before 2025-10-21): {action}",
                file=sys.stderr,
            )
        return denoiser

    @torch.no_grad()
    def forward(
        self, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_length(tokens)
        out_device = tokens.device
        ids = tokens.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(ids, dtype=torch.bool)
        mask = attention_mask.to(self.device).bool()
        logits, features = self._run(ids, mask)
        logits, features = self._finish(logits, features, mask)
        return logits.to(out_device), features.to(out_device)

    __call__ = forward

    def _check_length(self, tokens: torch.Tensor) -> None:
        if self.max_length is not None and tokens.shape[-1] > self.max_length:
            raise UpoError(
                f"{self.name}: a sequence of {tokens.shape[-1]} tokens (prompt and answer) is "
                f"longer than the {self.max_length} this model takes; shorten the prompt or "
                "gen_length"
            )

    def _run(self, ids: torch.Tensor, mask: torch.Tensor, store=None):
        """(raw logits, features) of the model's own forward; with a KVStore `store`, through
        the block-wise cache (models/hf_cache.py): its query positions only, when it has some."""
        padded = not bool(mask.all())
        self._captured = None
        query = None if store is None else store.query
        if query is not None:
            if self.convention == "dream":
                query = store.query = hf_cache.dream_query_window(query)
            positions = real_positions(mask).gather(1, query)
            ids = ids.gather(1, query)
        if query is not None and self.convention == "llada":
            bias = hf_cache.llada_key_bias(mask)
            with hf_cache.llada_cached_attention(self.model, self._n_layers, store, bias):
                out = self.model(ids)
        elif query is not None and self.convention == "dream":
            pair = mask[:, None, None, :].expand(-1, 1, ids.shape[1], -1) if padded else "full"
            steps = torch.arange(ids.shape[1], device=ids.device)
            out = self.model(ids, pair, positions, past_key_values=store, cache_position=steps)
        elif store is not None and self.convention == "llada":
            with hf_cache.llada_cached_attention(self.model, self._n_layers, store, None):
                out = self.model(ids, attention_mask=mask.long() if padded else None)
        elif self.convention == "llada":
            out = self.model(ids, attention_mask=mask.long() if padded else None)
        elif self.convention == "dream":
            # A refresh passes the store to record each layer's keys and values (it returns
            # them unchanged, so the forward is the uncached one).
            cached = {} if store is None else {"past_key_values": store}
            if padded:
                # Every query (padding too) sees the real keys: a fully masked query row gives
                # NaN, which a 0 attention weight does not cancel in the next layer (0 * NaN).
                pair = mask[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
                out = self.model(ids, pair, real_positions(mask), **cached)
            else:
                out = self.model(ids, "full", None, **cached)
        else:
            kwargs = {"attention_mask": mask.long()}
            if self._takes_positions:
                kwargs["position_ids"] = real_positions(mask)
            out = self.model(input_ids=ids, **kwargs)
        logits = out.logits if hasattr(out, "logits") else out[0]
        features = self._captured
        self._captured = None
        if features is None or features.shape[:2] != ids.shape:
            raise UpoError(
                f"{self.name}: could not capture the hidden states entering the last layer "
                f"(got {None if features is None else tuple(features.shape)})"
            )
        logits = logits[..., : self.vocab_size].float()
        if store is not None:
            logits, features = store.merge("logits", logits), store.merge("features", features)
        return logits, features

    def _finish(self, logits: torch.Tensor, features: torch.Tensor, mask: torch.Tensor):
        """The model's raw outputs as the Denoiser protocol has them (padding, Dream's shift,
        the mask logit)."""
        padded = not bool(mask.all())
        if padded:
            # Padded rows are never decoded, but models may leave NaN there (a query with every
            # key masked); zeros keep NaN out of anything that pools over positions. Before
            # Dream's shift, so the first real token cannot inherit a padded row's NaN.
            real = mask[..., None]
            logits = torch.where(real, logits, torch.zeros_like(logits))
            features = torch.where(real, features, torch.zeros_like(features))
        if self.convention == "dream":
            # Logit i - 1 predicts token i. A row's first real token has no predecessor: like
            # Dream's position 0 it keeps its own logits, so left padding changes nothing.
            shifted = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            before = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], dim=1)
            first = (mask & ~before)[..., None]
            logits = torch.where(first, logits, shifted)
        logits[..., self.mask_id] = float("-inf")
        return logits, features

    def cache_refusal(self) -> str | None:
        """None when block-wise caching (upo/cache.py) works for this model, else why not."""
        if self.convention == "llada":
            why = hf_cache.llada_refusal(self.model, self._n_layers)
        elif self.convention == "dream":
            why = hf_cache.dream_refusal(self.model)
        else:
            why = (
                f"{self.name}: upo caches LLaDA and Dream (and its own MDMs); models of the "
                f"{self.convention} convention (BERT, ModernBERT, ...) are not supported"
            )
            return why
        if why is None and not self.padding_exact and self.allow_unpadded_batching:
            # cached steps mask the padding that this model's own attention lets through
            why = "its attention ignores the padding mask and batches are padded anyway"
        return None if why is None else f"{self.name}: {why}"

    @torch.no_grad()
    def forward_cached(self, tokens: torch.Tensor, attention_mask: torch.Tensor, store):
        """forward() through the block-wise cache (upo/cache.py): with store.query None a full
        forward that records every layer's keys and values (equal to forward()), else only the
        query positions run and the others keep their stored keys, values and outputs."""
        self._check_length(tokens)
        out_device = tokens.device
        ids = tokens.to(self.device)
        mask = attention_mask.to(self.device).bool()
        logits, features = self._finish(*self._run(ids, mask, store), mask)
        return logits.to(out_device), features.to(out_device)

    def fingerprint(self) -> str:
        """Identifies the model from its config and a sample of every weight tensor (hashing all
        8B weights would take minutes)."""
        h = hashlib.sha256()
        config = getattr(self.model, "config", None)
        if config is not None:
            h.update(config.to_json_string(use_diff=False).encode())
        for name, p in self.model.named_parameters():
            h.update(name.encode())
            h.update(str(tuple(p.shape)).encode())
            sample = p.detach().flatten()[:16].float().cpu()
            h.update(sample.numpy().tobytes())
        return f"hf-{h.hexdigest()[:16]}"
