"""The settings of a UPO run (`upo policy train`), apart from the trainer that reads them, as TRL
keeps GRPOConfig apart from GRPOTrainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import check_seed, to_dict


@dataclass
class UPOConfig:
    """Every knob of a UPO run. Paper values (LLaDA-8B) in brackets where they differ."""

    task: str = "sudoku9"
    mdm: str = "checkpoints/sudoku9-mdm"
    train_data: str = "data/sudoku9-train.jsonl"
    val_data: str | None = None  # held-out items for periodic evaluation (never the test set)
    val_n: int = 200
    policy: dict = field(
        default_factory=dict
    )  # PolicyConfig fields (feature_dim comes from the MDM)
    init: str = "pretrained"  # "pretrained" (from `pretrained`) or "random"
    pretrained: str | None = None  # a policy checkpoint made by `upo policy pretrain`
    # A policy name or none; each rule's regulariser (CE or KL) and the Top-K restriction come
    # with it. The list: docs/policies.md, made from upo.policies.registry (the paper's softmax
    # reference is softmax-vocab:0.05).
    reference: str = "confidence"
    beta: float = 0.01  # regulariser weight [1e-4]; 0 = no regularisation
    # The GRPO step's objective by name (rl/objectives.py, like TRL's loss_type): "upo", the
    # clipped ratio objective plus beta times the reference's regulariser.
    objective: str = "upo"
    # The budget, one of two (not both): `steps` rollout rounds, each followed by `inner_steps`
    # optimiser steps; or `max_steps` optimiser steps as TRL counts them [3500], done in
    # ceil(max_steps / inner_steps) rounds (the last one may take fewer inner steps). Neither:
    # DEFAULT_ROUNDS rounds. eval_every and checkpoint_every count rollout rounds.
    steps: int | None = None
    max_steps: int | None = None
    prompts_per_step: int = 16  # per rollout round, over all processes (a multiple of them)
    group_size: int = 8  # G [6]
    inner_steps: int = 4  # mu: optimiser steps per rollout batch, on cached features [16]
    clip_eps: float = 0.5  # epsilon of the clipped ratio [0.5]
    temperature: float = 1.0  # position sampling temperature during rollouts [0.8]
    # "cell_acc": the task's partial credit (for grids the fraction of blanks right, the paper's
    # Sudoku reward; "partial_credit" is the same), or "solved" (1 for a fully right item)
    reward: str = "cell_acc"
    scale_rewards: bool = False  # divide advantages by the group std
    # With scale_rewards: the advantage is (r - mean) / (group std + scale_rewards_eps) [1e-4,
    # TRL's], and with zero_std_groups a group whose std is exactly 0 gets advantage 0 [true]:
    # the mean of equal rewards can round, leaving a residue that the division would blow up.
    scale_rewards_eps: float = 1e-6
    zero_std_groups: bool = False
    # The temperature of the log-probabilities in the loss (ratio, KL, cross-entropy). None: the
    # rollout `temperature`, the distribution the positions were actually sampled from (upo's:
    # an exact importance ratio). [1.0: the authors' code samples at 0.8 but scores softmax(s)]
    logprob_temperature: float | None = None
    # Clamp the log of the policy ratio to +-this before exp [10]; None: no clamp.
    log_ratio_clamp: float | None = None
    # The cross-entropy target of the `confidence` reference: "argmax" (one-hot on the float32
    # argmax of the top-1 probability; upo's) or "model-dtype" (uniform over every position tied
    # at the maximum once the top-1 probabilities are rounded to the MDM's dtype [the authors'])
    ce_ties: str = "argmax"
    # How a trajectory's per-step terms add up: "sum" (the paper's code) or "mean" (divided by
    # the trajectory's step count). Both the policy-gradient term and the regulariser follow it
    # (CE per step; the KL estimator's per-step score terms), so beta weighs the regulariser
    # against the policy gradient the same way under either; trajectories are then averaged.
    step_aggregation: str = "mean"
    # Subtracted from an item's reward per MDM call of its decode: the price of a forward. With a
    # set policy (policy keep_above) it trades accuracy for speed; 0 = reward accuracy only.
    nfe_cost: float = 0.0
    lr: float = 3e-4  # [3e-6 for the much larger LLaDA head]
    # Linear warm-up length, in the unit of the budget: optimiser steps with `max_steps` (TRL's
    # warm-up; the rate changes every optimiser step), rollout rounds with `steps` (the rate is
    # constant within a round, as upo always did).
    warmup_steps: int = 5
    weight_decay: float = 0.1
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    grad_clip: float = 1.0  # [0.2]
    # states per forward in the update, in whole trajectories (a longer one is a chunk of its own);
    # small chunks stay in cache
    chunk_states: int = 256
    seed: int = 0
    threads: int = 2
    eval_every: int = 20
    checkpoint_every: int = 5
    # Hugging Face MDMs: load options (trust_remote_code, dtype, device, mask_id, convention)
    # and text-task settings (gen_length, block_length, chat, system). Empty for upo's own MDMs.
    mdm_options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)
    # Where rollout features are cached for the mu update steps: "device" (the MDM's, fastest)
    # or "cpu" (frees accelerator memory; each chunk is copied over when the update uses it).
    feature_cache: str = "device"
    # Rollouts through the block-wise key/value cache (docs/cache.md): "none" (exact), "prefix"
    # or "dual" (faster, approximate; the policy learns from the features it saw). Validation
    # and the max-confidence baseline decode without it.
    rollout_cache: str = "none"

    def validate(self) -> None:
        if self.rollout_cache not in ("none", "prefix", "dual"):
            raise ValueError(
                f"rollout_cache must be 'none', 'prefix' or 'dual', got {self.rollout_cache!r}"
            )
        if self.feature_cache not in ("device", "cpu"):
            raise ValueError(f"feature_cache must be 'device' or 'cpu', got {self.feature_cache!r}")
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"init must be 'pretrained' or 'random', got {self.init!r}")
        if self.init == "pretrained" and not self.pretrained:
            raise ValueError("init 'pretrained' needs `pretrained:` (a policy checkpoint)")
        if self.reward not in ("cell_acc", "partial_credit", "solved"):
            raise ValueError(
                f"reward must be 'cell_acc' (or 'partial_credit') or 'solved', got {self.reward!r}"
            )
        self._validate_loss_options()
        if self.step_aggregation not in ("mean", "sum"):
            raise ValueError("step_aggregation must be 'mean' or 'sum'")
        if self.group_size < 2:
            raise ValueError("group_size must be at least 2 (advantages are relative to the group)")
        if not self.nfe_cost >= 0:
            raise ValueError(f"nfe_cost must be >= 0, got {self.nfe_cost}")
        if self.beta < 0 or self.temperature <= 0 or not 0 < self.clip_eps < 1:
            raise ValueError("need beta >= 0, temperature > 0 and 0 < clip_eps < 1")
        if self.temperature < 1e-6:
            # The policy's logits / temperature overflow float32 long before 1e-300, and
            # sampling that sharp is greedy decoding anyway.
            raise ValueError(f"temperature must be at least 1e-06, got {self.temperature:g}")
        check_seed(self.seed)
        if self.steps is not None and self.max_steps is not None:
            raise ValueError(
                f"give steps (rollout rounds) or max_steps (optimiser steps), not both: "
                f"steps {self.steps}, max_steps {self.max_steps}"
            )
        budget = self.max_steps if self.max_steps is not None else self.rollout_rounds
        if min(budget, self.prompts_per_step, self.inner_steps, self.chunk_states) < 1:
            raise ValueError(
                "steps, max_steps, prompts_per_step, inner_steps and chunk_states must be >= 1"
            )
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, weight_decay >= 0, grad_clip > 0 and warmup_steps >= 0")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if min(self.eval_every, self.checkpoint_every, self.threads, self.val_n) < 1:
            raise ValueError("eval_every, checkpoint_every, threads and val_n must be >= 1")

    def _validate_loss_options(self) -> None:
        if not self.scale_rewards_eps >= 0:
            raise ValueError(f"scale_rewards_eps must be >= 0, got {self.scale_rewards_eps}")
        if self.logprob_temperature is not None and not self.logprob_temperature >= 1e-6:
            raise ValueError(
                f"logprob_temperature must be at least 1e-06 (or null: the rollout temperature), "
                f"got {self.logprob_temperature:g}"
            )
        if self.log_ratio_clamp is not None and not self.log_ratio_clamp > 0:
            raise ValueError(f"log_ratio_clamp must be > 0 (or null), got {self.log_ratio_clamp}")
        if self.ce_ties not in ("argmax", "model-dtype"):
            raise ValueError(f"ce_ties must be 'argmax' or 'model-dtype', got {self.ce_ties!r}")
        if self.ce_ties == "model-dtype" and self.reference != "confidence":
            # ties are defined on the top-1 probability, the confidence rule's score
            raise ValueError(
                f"ce_ties 'model-dtype' is the max-confidence target; reference is "
                f"{self.reference!r}, use reference: confidence or ce_ties: argmax"
            )

    @property
    def loss_temperature(self) -> float:
        """The temperature of every log-probability in the loss."""
        if self.logprob_temperature is None:
            return self.temperature
        return self.logprob_temperature

    @property
    def rollout_rounds(self) -> int:
        """How many rollout batches the run makes."""
        if self.max_steps is not None:
            return math.ceil(self.max_steps / self.inner_steps)
        return self.steps if self.steps is not None else DEFAULT_ROUNDS

    @property
    def optimizer_steps(self) -> int:
        return self.optimizer_steps_before(self.rollout_rounds)

    def optimizer_steps_before(self, round_: int) -> int:
        """Optimiser steps taken by the first `round_` rollout rounds."""
        done = round_ * self.inner_steps
        return done if self.max_steps is None else min(done, self.max_steps)

    def inner_steps_in(self, round_: int) -> int:
        """Optimiser steps of rollout round `round_` (0-based): the last round of a max_steps
        budget stops at max_steps, like TRL."""
        return self.optimizer_steps_before(round_ + 1) - self.optimizer_steps_before(round_)

    def lr_at(self, round_: int, optimizer_step: int) -> float:
        """Learning rate of an optimiser step (0-based counts), warm-up in the budget's unit."""
        progress = optimizer_step if self.max_steps is not None else round_
        return self.lr * min(1.0, (progress + 1) / max(1, self.warmup_steps))

    def run_config(self) -> dict:
        """The settings recorded with a run and compared on --resume. Without max_steps it is
        the dict earlier versions wrote (steps filled in, no max_steps key), so their run
        directories still resume; likewise nfe_cost when 0 and objective when "upo"."""
        out = to_dict(self)
        if self.nfe_cost == 0:
            del out["nfe_cost"]
        if self.objective == "upo":  # the objective came later
            del out["objective"]
        if self.rollout_cache == "none":  # so did the cache
            del out["rollout_cache"]
        # the loss options came later: left out at upo's defaults, so older runs still resume
        for name, default in LOSS_OPTION_DEFAULTS.items():
            if out[name] == default:
                del out[name]
        if self.max_steps is None:
            out["steps"] = self.rollout_rounds
            del out["max_steps"]
        return out


DEFAULT_ROUNDS = 100  # rollout rounds when a config gives neither steps nor max_steps
# Left out of run_config at these values, so runs from before each option still resume.
LOSS_OPTION_DEFAULTS = {
    "scale_rewards_eps": 1e-6,
    "zero_std_groups": False,
    "logprob_temperature": None,
    "log_ratio_clamp": None,
    "ce_ties": "argmax",
}
