"""upo as an lm-evaluation-harness model: `--model upo` (pip install 'upo[lmeval]').

    python -m upo.lmeval --model upo --tasks gsm8k --batch_size 8 \\
        --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,trust_remote_code=true,dtype=bfloat16,policy=runs/llada-gsm8k,gen_length=256,block_length=32

`python -m upo.lmeval` is lm-eval's own command line with this model registered (as LLaDA's
`eval_llada.py` does for its sampler); in Python, `import upo.lmeval` registers it for
`lm_eval.simple_evaluate(model="upo", ...)`.

Generative tasks only: `generate_until` decodes every request through `upo.generate` (batched
and exact: a request's answer does not depend on its batch), cuts each answer at the first
end-of-sequence token and then at the first of the task's stop strings (`until`). An MDM sampler
decodes an answer; it does not score a given continuation, so the loglikelihood requests of
multiple-choice tasks raise an error that says so.
"""

from __future__ import annotations

import sys

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:
    if __name__ == "__main__":
        print("upo: error: lm-eval is not installed: pip install 'upo[lmeval]'", file=sys.stderr)
        sys.exit(2)
    raise ImportError(
        "upo.lmeval needs lm-eval 0.4 (0.4.13 or later): pip install 'upo[lmeval]'"
    ) from None

from .api import generate, load_mdm, load_policy
from .cache import check_cacheable
from .errors import UpoError

NAME = "upo"

# Every model_arg, its type(s) and default. The names are those of LLaDA's generate() and of
# lm-eval's "hf" model (pretrained, dtype, device, trust_remote_code, batch_size).
ARGS = {
    "pretrained": ((str,), None),  # the Hugging Face MDM: a directory or a Hub id
    "policy": ((str,), "confidence"),  # any policy name: docs/policies.md
    "gen_length": ((int,), 256),
    "block_length": ((int, type(None)), 32),  # None: one block
    "steps": ((int, type(None)), None),  # LLaDA's steps: gen_length / steps positions per step
    "k": ((int, type(None)), None),  # or k positions per step (default 1)
    "threshold": ((float, int, type(None)), None),  # or Fast-dLLM's threshold rule
    "cache": ((str,), "none"),  # block-wise key/value caching: none, prefix, dual
    "token_temperature": ((float, int), 0.0),
    "batch_size": ((int, str), 8),
    "dtype": ((str,), "auto"),
    "device": ((str, type(None)), None),  # default: cuda when available, else cpu
    "trust_remote_code": ((bool,), False),
    "mask_id": ((int, type(None)), None),
    "confidence": ((str,), "float32"),  # "model": LLaDA's own bf16 confidences
    "allow_unpadded_batching": ((bool,), False),
    "seed": ((int,), 0),
    "max_batch_size": ((int, str, type(None)), None),  # passed by lm-eval; unused
}
ALIASES = {"model_path": "pretrained"}  # LLaDA's and Fast-dLLM's name for it

GENERATE_ONLY = (
    "upo's lm-eval model only generates (generate_until): an MDM sampler decodes answers and "
    "does not score given continuations, so loglikelihood and multiple-choice tasks cannot run "
    "on it; choose generative tasks (gsm8k, minerva_math, humaneval, ...)"
)


def parse_args(kwargs: dict) -> dict:
    """The model_args with their defaults, each of its exact type; one UpoError line otherwise."""
    given = dict(kwargs)
    for alias, name in ALIASES.items():
        if alias in given:
            if name in given:
                raise UpoError(f"model_args: give {name} or {alias}, not both")
            given[name] = given.pop(alias)
    unknown = sorted(set(given) - set(ARGS))
    if unknown:
        raise UpoError(f"model_args: unknown argument {unknown[0]!r}; valid: {', '.join(ARGS)}")
    if given.get("pretrained") is None:
        raise UpoError("model_args: pretrained=DIR_OR_HUB_ID (the Hugging Face MDM) is required")
    if isinstance(given["pretrained"], str) and not given["pretrained"].strip():
        # An empty path would be read as the current directory.
        raise UpoError("model_args: pretrained= is empty; give the MDM's directory or Hub id")
    out = {}
    for name, (types, default) in ARGS.items():
        value = given.get(name, default)
        bad_bool = isinstance(value, bool) and bool not in types  # True is an int in Python
        if bad_bool or not isinstance(value, types):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise UpoError(f"model_args: {name} must be {wanted}, got {value!r:.60}")
        out[name] = value
    size = out["batch_size"]
    if isinstance(size, str):
        if not (size.isascii() and size.isdigit()):  # '²'.isdigit() is True; int('²') fails
            raise UpoError(
                f"batch_size {size!r}: give a number (upo does not search for a batch size)"
            )
        out["batch_size"] = int(size)
    if out["batch_size"] < 1:
        raise UpoError(f"batch_size must be at least 1, got {out['batch_size']}")
    return out


@register_model(NAME)
class UpoLM(LM):
    """A Hugging Face MDM decoded by upo with any unmasking policy. See the module docstring."""

    def __init__(self, **kwargs):
        super().__init__()
        args = parse_args(kwargs)
        import torch

        device = args["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line passes cuda:0 unless told otherwise; like its "hf" model,
            # fall back to the CPU, and say so.
            print(f"upo: {device} is not available here; running on the CPU", file=sys.stderr)
            device = "cpu"
        self.mdm = load_mdm(
            args["pretrained"],
            dtype=args["dtype"],
            device=device,
            trust_remote_code=args["trust_remote_code"],
            mask_id=args["mask_id"],
            confidence=args["confidence"],
            allow_unpadded_batching=args["allow_unpadded_batching"],
        )
        if self.mdm.tokenizer is None:
            raise UpoError(f"{args['pretrained']}: lm-eval needs an MDM with a tokenizer")
        check_cacheable(self.mdm, args["cache"])
        self.policy = load_policy(args["policy"], self.mdm)
        self.args = args
        self._device = self.mdm.device
        self._warned_sampling = False

    @property
    def tokenizer(self):
        return self.mdm.tokenizer

    @property
    def batch_size(self) -> int:
        return self.args["batch_size"]

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) or ""

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    def encode(self, context: str) -> list[int]:
        """The prompt's ids. A context that already starts with the BOS token (lm-eval applied
        the chat template) gets no second one."""
        bos = getattr(self.tokenizer, "bos_token", None)
        special = not (bos and context.startswith(bos))
        return list(self.tokenizer(context, add_special_tokens=special)["input_ids"])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from tqdm import tqdm

        if not requests:
            return []
        contexts = [req.args[0] for req in requests]
        settings = [req.args[1] if len(req.args) > 1 else {} for req in requests]
        self._warn_sampling(settings)
        ids = [self.encode(c) for c in contexts]
        # Longest first, so each batch holds prompts of similar lengths (less padding to run);
        # the answers do not depend on it.
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        a = self.args
        with tqdm(
            total=len(ids), desc="upo: generate_until", disable=disable_tqdm or self.rank != 0
        ) as bar:
            out = generate(
                self.mdm,
                [ids[i] for i in order],
                self.policy,
                gen_length=a["gen_length"],
                block_length=a["block_length"],
                steps=a["steps"],
                k=a["k"],
                threshold=a["threshold"],
                token_temperature=float(a["token_temperature"]),
                batch_size=a["batch_size"],
                seed=a["seed"],
                progress=bar.update,
                cache=a["cache"],
            )
        texts = [""] * len(ids)
        for slot, index in enumerate(order):
            texts[index] = cut_at_stops(out.texts[slot], settings[index].get("until"))
        for context, setting, text in zip(contexts, settings, texts):
            self.cache_hook.add_partial("generate_until", (context, setting), text)
        return texts

    def _warn_sampling(self, settings: list[dict]) -> None:
        if self._warned_sampling or not any(s.get("do_sample") for s in settings):
            return
        self._warned_sampling = True
        print(
            "upo: the task asks for sampling (do_sample); upo fills tokens with "
            "token_temperature from model_args (default 0: greedy) and ignores the task's "
            "temperature",
            file=sys.stderr,
        )

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(GENERATE_ONLY)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError(GENERATE_ONLY)


def cut_at_stops(text: str, until) -> str:
    """`text` up to the first occurrence of any stop string (lm-eval's `until`: a string or a
    list of them)."""
    if until is None:
        return text
    stops = [until] if isinstance(until, str) else list(until)
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def main() -> int:
    """lm-eval's command line with the "upo" model registered; bad input is one line."""
    from lm_eval.__main__ import cli_evaluate

    try:
        cli_evaluate()
    except UpoError as err:
        print(f"upo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
