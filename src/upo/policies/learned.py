"""The learned unmasking policy g_phi: a small network on top of the frozen MDM's own features.

Per position it sees the MDM hidden state entering the last block (detached), the MDM's top-8
token probabilities (mask token excluded, sorted), a mask flag and a block flag. One transformer
block mixes the hidden states across positions; after a norm they are concatenated with the
probability and flag features and an MLP gives one score per position. The policy is
softmax(score / temperature) over the candidate positions. It never re-runs the MDM.

Two heads (`PolicyConfig.arch`):
- "upo" (default): the hidden states projected to `width`, a small pre-norm block of upo's own
  and a 3-layer GELU MLP of `mlp_hidden`: small enough to train quickly beside an 8B MDM.
- "mdm-block": the UPO paper's head. A copy of the MDM's own last block (its architecture and
  width, weights copied at construction and then trained), a fresh norm of the type of the MDM's
  final norm, then an MLP over [block output, block flag, mask flag, top-8 probabilities] with 3
  hidden layers of width D + 10, each Linear (no bias) -> float32 LayerNorm -> SiLU, and a last
  Linear (no bias) to one score. Parameters: those of the MDM's last block, of its final norm, and
  3 (m^2 + 2m) + m for the MLP with m = D + 10 (an m x m weight and a LayerNorm's 2m per hidden
  layer, then m x 1), plus one with confidence_skip. Built from the MDM, so constructing or
  loading it needs the MDM.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import (
    check_shapes,
    check_weights_fit,
    checkpoint_json,
    load_weights,
    read_weight_shapes,
    save_checkpoint,
)
from ..config import from_dict, to_dict
from ..errors import UpoError
from ..models.denoiser import Denoiser
from ..nn import attention, fused_attention
from .base import NEG_INF, Choice, Policy, StepState, masked_log_softmax, top_by_score
from .rules import confidence
from .sets import greedy_set, sample_set, set_log_prob

TOP_PROBS = 8
ARCHS = ("upo", "mdm-block")
MDM_BLOCK_EXTRA = TOP_PROBS + 2  # the features beside the block output: top-8 and two flags
MDM_BLOCK_HIDDEN_LAYERS = 3


@dataclass
class PolicyConfig:
    feature_dim: int  # the MDM's feature width (192 for the shipped Sudoku MDM, 4096 for LLaDA)
    width: int = 64  # the policy's own width: MDM features are projected down to it
    n_heads: int = 4
    mlp_hidden: int = 64
    restrict_topk: int | None = None  # only ever choose among the K most confident candidates
    # Anchor to max-confidence: score = MLP(...) + w * top-1 probability, w a learned scalar
    # starting here, with the MLP's last layer starting at zero. The untrained policy is then
    # exactly max-confidence when greedy and softmax(confidence / (w T)) when sampled, and RL
    # learns a correction instead of relearning the rule. None: plain MLP score.
    confidence_skip: float | None = None
    # Embed the board the MDM is looking at: each position's token, or the MDM's argmax prediction
    # where it is still masked (the vocabulary size of the MDM; None: not used). This lets the
    # attention compare what positions are about to receive, e.g. two masked cells of one Sudoku
    # row predicted to hold the same digit, which no single position's confidence shows. No gain
    # on the built-in 9x9 MDM so far (experiments/README.md); kept because it is the one input
    # that shows conflicts between positions, which choosing several positions per step needs.
    board_vocab: int | None = None
    # Fill a near-certain cell without asking the network: when the most confident candidate's
    # top-1 probability exceeds this, it is the only allowed position. Most steps are choices among
    # cells that are all near-certain, where the order changes nothing; gating them out leaves the
    # network (and GRPO's reward signal) to the few states where the choice can matter, and saves
    # the policy's forward at most steps. None: off.
    certain_above: float | None = None
    # Fill a set of positions per step (upo.policies.sets): a first position from the scores, and
    # each other allowed position kept with probability sigmoid(keep score). The keep score is a
    # second head plus keep_gain * (top-1 probability - keep_above), its head starting at zero, so
    # the untrained greedy policy keeps exactly the positions above keep_above: threshold:P with
    # P = keep_above. None: one position per step (k of them with --k).
    keep_above: float | None = None
    keep_gain: float = 20.0  # initial slope of the keep score in the confidence; learned
    # The head: "upo" (upo's small head) or "mdm-block" (the paper's, built from the MDM's last
    # block; width, n_heads and mlp_hidden do not apply to it). See the module docstring.
    arch: str = "upo"

    def validate(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r:.40}")
        if self.arch == "mdm-block" and (
            self.board_vocab is not None or self.keep_above is not None
        ):
            # both add inputs or outputs to upo's own head only
            raise ValueError("arch mdm-block takes neither board_vocab nor keep_above")
        if self.feature_dim < 1 or self.width < 1 or self.mlp_hidden < 1:
            raise ValueError("feature_dim, width and mlp_hidden must be positive")
        if self.width % self.n_heads:
            raise ValueError(f"width {self.width} is not divisible by n_heads {self.n_heads}")
        if self.restrict_topk is not None and self.restrict_topk < 1:
            raise ValueError("restrict_topk must be at least 1")
        if self.certain_above is not None and not 0.0 < self.certain_above < 1.0:
            raise ValueError(f"certain_above must be in (0, 1), got {self.certain_above}")
        if self.keep_above is not None:
            if not 0.0 < self.keep_above < 1.0:
                raise ValueError(f"keep_above must be in (0, 1), got {self.keep_above}")
            if self.certain_above is not None:
                raise ValueError(
                    "keep_above and certain_above do not combine (the gate would "
                    "leave one position to keep)"
                )
            if not self.keep_gain > 0:
                raise ValueError(f"keep_gain must be positive, got {self.keep_gain}")
        if self.board_vocab is not None and self.board_vocab < 2:
            raise ValueError("board_vocab must be the MDM's vocabulary size (at least 2)")


@dataclass
class PolicyInputs:
    """What the policy network reads at one state; cached during rollouts (features in bf16)."""

    features: torch.Tensor  # [N, L, D]
    top_probs: torch.Tensor  # [N, L, 8]
    masked: torch.Tensor  # [N, L] bool
    block: torch.Tensor  # [N, L] bool
    allowed: torch.Tensor  # [N, L] bool: positions the policy may choose
    board: torch.Tensor  # [N, L] long: the token at each position, the MDM's argmax where masked
    valid: torch.Tensor  # [N, L] bool: False at padding, which the policy's attention must not see

    def take(self, idx) -> PolicyInputs:
        return PolicyInputs(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def cat(parts: list[PolicyInputs]) -> PolicyInputs:
        return PolicyInputs(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(PolicyInputs)}
        )


def top_probabilities(probs: torch.Tensor, mask_id: int, k: int = TOP_PROBS) -> torch.Tensor:
    """[B, L, k] the k largest token probabilities, mask token excluded, zero-padded when the
    vocabulary is smaller than k."""
    p = probs.clone()
    p[..., mask_id] = 0.0
    k_eff = min(k, p.shape[-1] - 1)
    top = p.topk(k_eff, dim=-1).values
    if k_eff < k:
        top = torch.cat([top, top.new_zeros(*top.shape[:-1], k - k_eff)], dim=-1)
    return top


def allowed_positions(
    state: StepState, restrict_topk: int | None, certain_above: float | None = None
) -> torch.Tensor:
    if restrict_topk is None and certain_above is None:
        return state.candidates
    conf = confidence(state)
    allowed = (
        state.candidates
        if restrict_topk is None
        else top_by_score(conf, state.candidates, restrict_topk)
    )
    if certain_above is not None:
        best = top_by_score(conf, state.candidates, 1)
        certain = (conf.masked_fill(~state.candidates, 0.0).amax(1) > certain_above)[:, None]
        allowed = torch.where(certain, best, allowed)
    return allowed


def is_decision(inputs: PolicyInputs) -> torch.Tensor:
    """[N] bool: states where the policy has more than one position to choose from. The others
    (a gated near-certain cell, the last masked cell) have log-probability 0 and no gradient."""
    return inputs.allowed.sum(1) > 1


def inputs_from_state(
    state: StepState, mask_id: int, restrict_topk: int | None, certain_above: float | None = None
) -> PolicyInputs:
    return PolicyInputs(
        features=state.features.to(torch.bfloat16),
        top_probs=top_probabilities(state.probs, mask_id),
        masked=state.masked,
        block=state.block,
        allowed=allowed_positions(state, restrict_topk, certain_above),
        board=torch.where(state.masked, state.logits.argmax(-1), state.tokens),
        valid=(
            torch.ones_like(state.masked)
            if state.attention_mask is None
            else state.attention_mask.bool()
        ),
    )


def policy_dtype(mdm: Denoiser | None) -> str:
    """The arithmetic the policy network runs in: the MDM's own (`mdm.dtype_used`, which
    `dtype: auto | bfloat16 | float32` decided), so one setting governs both and bf16 is never
    emulated on a CPU without it. Without an MDM, the same "auto" rule decides. Weights are
    stored in float32 either way, so a checkpoint trained in one precision runs in the other."""
    if mdm is None:
        from ..models.precision import resolve_dtype

        return resolve_dtype("auto")
    # bf16 only where the MDM runs in it; a float16 Hugging Face model gets a float32 head
    return "bfloat16" if mdm.dtype_used == "bfloat16" else "float32"


def mdm_meta(mdm_name: str, mdm: Denoiser, fingerprint: str) -> dict:
    """What a policy checkpoint's meta.json says about the MDM it was trained with (policy
    train and policy pretrain alike): the name it was given, the dtype it ran in ("auto" differs
    by CPU), the policy network's (which follows the MDM's) and the MDM's fingerprint."""
    return {
        "mdm": mdm_name,
        "mdm_dtype": mdm.dtype_used,
        "policy_dtype": policy_dtype(mdm),
        "mdm_fingerprint": fingerprint,
    }


class LayerNormFP32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the autocast dtype, output in the input's dtype: the
    paper head's MLP normalises every hidden layer this way, so bf16 rounding never enters the
    statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = nn.functional.layer_norm(
                x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
            )
        return out.to(x.dtype)


def mdm_block_mlp(d_model: int) -> nn.Sequential:
    """The paper head's MLP over [block output, block flag, mask flag, top-8]: 3 hidden layers of
    width d_model + 10 (Linear without bias, float32 LayerNorm, SiLU), then one score."""
    m = d_model + MDM_BLOCK_EXTRA
    layers: list[nn.Module] = []
    for _ in range(MDM_BLOCK_HIDDEN_LAYERS):
        layers += [nn.Linear(m, m, bias=False), LayerNormFP32(m), nn.SiLU()]
    layers.append(nn.Linear(m, 1, bias=False))
    return nn.Sequential(*layers)


class PolicyNet(nn.Module):
    def __init__(self, cfg: PolicyConfig, bf16: bool = True, mdm: Denoiser | None = None):
        """`mdm`: the MDM the head is built from; needed (only) for arch mdm-block."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.bf16 = bf16
        if cfg.arch == "mdm-block":
            self._build_mdm_block(cfg, mdm)
            return
        self.proj = nn.Linear(cfg.feature_dim, cfg.width)
        if cfg.board_vocab is not None:
            self.board_embed = nn.Embedding(cfg.board_vocab, cfg.width)
        self.norm1 = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.out = nn.Linear(cfg.width, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.ff = nn.Sequential(
            nn.Linear(cfg.width, 2 * cfg.width), nn.GELU(), nn.Linear(2 * cfg.width, cfg.width)
        )
        self.norm3 = nn.LayerNorm(cfg.width)
        extra = TOP_PROBS + 2
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width + extra, cfg.mlp_hidden),
            nn.GELU(),
            nn.Linear(cfg.mlp_hidden, cfg.mlp_hidden),
            nn.GELU(),
            nn.Linear(cfg.mlp_hidden, 1),
        )
        if cfg.confidence_skip is not None:
            self.skip = nn.Parameter(torch.tensor(float(cfg.confidence_skip)))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        if cfg.keep_above is not None:
            self.keep_mlp = nn.Sequential(
                nn.Linear(cfg.width + extra, cfg.mlp_hidden),
                nn.GELU(),
                nn.Linear(cfg.mlp_hidden, 1),
            )
            nn.init.zeros_(self.keep_mlp[-1].weight)
            nn.init.zeros_(self.keep_mlp[-1].bias)
            self.keep_gain = nn.Parameter(torch.tensor(float(cfg.keep_gain)))

    def _build_mdm_block(self, cfg: PolicyConfig, mdm: Denoiser | None) -> None:
        from ..models.last_block import last_block_trunk

        if mdm is None:
            raise UpoError(
                "policy.arch mdm-block is built from the MDM's last block: it needs the MDM "
                "(load_policy(path, mdm))"
            )
        if cfg.feature_dim != mdm.feature_dim:
            raise UpoError(
                f"policy.arch mdm-block: feature_dim {cfg.feature_dim} is not the MDM's width "
                f"{mdm.feature_dim}"
            )
        self.trunk = last_block_trunk(mdm)
        self.mlp = mdm_block_mlp(cfg.feature_dim)
        if cfg.confidence_skip is not None:
            self.skip = nn.Parameter(torch.tensor(float(cfg.confidence_skip)))
            nn.init.zeros_(self.mlp[-1].weight)
        # the block copy was made where the MDM's block lives: keep the head in one place
        self.to(mdm.device)

    @property
    def chooses_sets(self) -> bool:
        return self.cfg.keep_above is not None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, inp: PolicyInputs) -> torch.Tensor:
        """Scores [N, L] (float32), before masking and temperature."""
        return self.heads(inp)[0]

    def heads(self, inp: PolicyInputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scores [N, L], keep logits [N, L] or None for a one-position policy), float32, before
        masking and temperature. Linear layers run under bf16 autocast on CPU (2-3x faster here);
        attention and the final scores stay float32."""
        dev = inp.features.device.type
        if self.cfg.arch == "mdm-block":
            return self._mdm_block_scores(inp), None
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=self.bf16):
            feats = inp.features
            if not self.bf16:  # cached features are bf16; a float32 network reads them as such
                feats = feats.to(self.proj.weight.dtype)
            x = self.proj(feats)
            if self.cfg.board_vocab is not None:
                x = x + self.board_embed(inp.board)
            n, l, w = x.shape
            h = self.cfg.n_heads
            qkv = self.qkv(self.norm1(x)).view(n, l, 3, h, w // h).permute(2, 0, 3, 1, 4)
            with torch.autocast(device_type=dev, enabled=False):
                # Training passes take the fused kernel (faster backward); inference keeps the
                # hand-written one, so greedy decisions stay bit-identical to recorded results.
                kernel = fused_attention if torch.is_grad_enabled() else attention
                att = kernel(*qkv.unbind(0), inp.valid)  # unbind: no zero-filled grad buffer
            att = att.transpose(1, 2).reshape(n, l, w).to(x.dtype)
            x = x + self.out(att)
            x = x + self.ff(self.norm2(x))
            flags = torch.stack([inp.masked, inp.block], dim=-1).to(x.dtype)
            z = torch.cat([self.norm3(x).to(x.dtype), inp.top_probs.to(x.dtype), flags], dim=-1)
            scores = self.mlp(z).squeeze(-1)
            keep = self.keep_mlp(z).squeeze(-1) if self.chooses_sets else None
        scores = scores.float()
        top1 = inp.top_probs[..., 0].float()
        if self.cfg.confidence_skip is not None:
            scores = scores + self.skip * top1
        if keep is not None:
            keep = keep.float() + self.keep_gain * (top1 - self.cfg.keep_above)
        return scores, keep

    def _mdm_block_scores(self, inp: PolicyInputs) -> torch.Tensor:
        """Scores [N, L] float32 of the mdm-block head: the block copy runs in the policy's
        precision (bf16 autocast as the MDM, or float32), the MLP's norms in float32."""
        dev = inp.features.device.type
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=self.bf16):
            feats = inp.features if self.bf16 else inp.features.float()
            x = self.trunk(feats, inp.valid)
            flags = torch.stack([inp.block, inp.masked], dim=-1).to(x.dtype)
            z = torch.cat([x, flags, inp.top_probs.to(x.dtype)], dim=-1)
            scores = self.mlp(z).squeeze(-1).float()
        if self.cfg.confidence_skip is not None:
            scores = scores + self.skip * inp.top_probs[..., 0].float()
        return scores

    def log_probs(self, inp: PolicyInputs, temperature: float = 1.0) -> torch.Tensor:
        """log g_phi over positions at `temperature` [N, L]; -inf outside `allowed`. For a set
        policy: the distribution of the first position."""
        return masked_log_softmax(self.forward(inp) / temperature, inp.allowed)

    def set_log_probs(
        self, inp: PolicyInputs, chosen: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """[N] exact log-probability of the sets `chosen` [N, L] at `temperature` (set policies)."""
        scores, keep = self.heads(inp)
        first = masked_log_softmax(scores / temperature, inp.allowed)
        return set_log_prob(first, keep / temperature, chosen, inp.allowed)


class LearnedPolicy(Policy):
    """The network as an unmasking policy: greedy (argmax score) for evaluation, or sampled at a
    temperature for rollouts, in which case the reported log-probs are of that tempered
    distribution, the one actually sampled from."""

    learned = True  # named by its checkpoint directory, not by a spelling

    def __init__(
        self,
        net: PolicyNet,
        mask_id: int,
        temperature: float = 1.0,
        greedy: bool = True,
        name: str = "learned",
    ):
        self.net = net
        self.mask_id = mask_id
        self.temperature = temperature
        self.deterministic = greedy
        self.name = name

    def to(self, device: torch.device) -> LearnedPolicy:
        self.net.to(device)
        return self

    def inputs(self, state: StepState) -> PolicyInputs:
        cfg = self.net.cfg
        return inputs_from_state(state, self.mask_id, cfg.restrict_topk, cfg.certain_above)

    @torch.no_grad()
    def greedy_scores(self, state):
        inp = self.inputs(state)
        return self.net(inp).masked_fill(~inp.allowed, NEG_INF)

    @torch.no_grad()
    def log_probs(self, state):
        return self.net.log_probs(self.inputs(state), self.temperature)

    @torch.no_grad()
    def select(self, state: StepState, k: int, generator=None) -> Choice:
        if not self.net.chooses_sets:
            return super().select(state, k, generator)
        # a set policy decides how many positions itself: k does not apply
        inp = self.inputs(state)
        scores, keep = self.net.heads(inp)
        if self.deterministic:
            chosen = greedy_set(scores.masked_fill(~inp.allowed, NEG_INF), keep, inp.allowed)
            return Choice(chosen, torch.zeros(chosen.shape[0], device=chosen.device))
        first = masked_log_softmax(scores / self.temperature, inp.allowed)
        chosen = sample_set(first, keep / self.temperature, inp.allowed, generator)
        return Choice(chosen, set_log_prob(first, keep / self.temperature, chosen, inp.allowed))


def policy_checkpoint_config(
    net: PolicyNet, mdm_fingerprint: str, train_config: dict | None = None
) -> dict:
    """config.json of a policy checkpoint: the network's settings and the MDM it belongs to."""
    config = {"kind": "policy", "policy": to_dict(net.cfg), "mdm_fingerprint": mdm_fingerprint}
    if train_config is not None:
        config["train"] = train_config  # the run's settings, for --resume checks and provenance
    return config


def save_policy(
    out_dir,
    net: PolicyNet,
    mdm_fingerprint: str,
    meta: dict,
    train_config: dict | None = None,
    **train_state,
) -> None:
    config = policy_checkpoint_config(net, mdm_fingerprint, train_config)
    save_checkpoint(
        out_dir, net, config, {**meta, "mdm_fingerprint": mdm_fingerprint}, **train_state
    )


def is_policy_checkpoint(path) -> bool:
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    try:
        return checkpoint_json(p, "config.json").get("kind") == "policy"
    except UpoError:
        return False


def load_policy(path, mdm: Denoiser | None = None, dtype: str | None = None) -> PolicyNet:
    """Load a policy checkpoint; with `mdm`, refuse one trained on a different MDM. It runs in
    `dtype` (bfloat16 or float32), by default the MDM's (`policy_dtype`)."""
    path = Path(path)
    if not path.is_dir():
        raise UpoError(f"{path}: policy checkpoint directory not found")
    cfg_json = checkpoint_json(path, "config.json")
    if cfg_json.get("kind") != "policy":
        raise UpoError(
            f"{path}: not a policy checkpoint (config.json kind is {cfg_json.get('kind')!r})"
        )
    cfg = from_dict(PolicyConfig, cfg_json.get("policy", {}), f"{path / 'config.json'}: policy")
    if mdm is not None:
        if cfg.feature_dim != mdm.feature_dim:
            raise UpoError(
                f"{path}: policy expects MDM features of width {cfg.feature_dim}, this MDM has {mdm.feature_dim}"
            )
        want, have = cfg_json.get("mdm_fingerprint"), mdm.fingerprint()
        if want != have:
            raise UpoError(f"{path}: policy was trained on MDM {want}, not on this MDM ({have})")
    bf16 = (dtype or policy_dtype(mdm)) == "bfloat16"
    if cfg.arch == "mdm-block":
        if mdm is None:
            raise UpoError(
                f"{path}: an mdm-block policy is built from its MDM's last block; load it with "
                "the MDM it was trained on"
            )
        # Its sizes are the MDM's own (checked by the fingerprint above), so building it for
        # real allocates nothing a config could inflate; the stored tensors must then fit it.
        net = PolicyNet(cfg, bf16=bf16, mdm=mdm)
        check_shapes(
            path / "model.safetensors",
            {k: tuple(v.shape) for k, v in net.state_dict().items()},
            read_weight_shapes(path / "model.safetensors"),
        )
    else:
        # config.json's sizes must describe the stored tensors before they are allocated
        check_weights_fit(
            path / "model.safetensors", lambda: PolicyNet(cfg), f"{path / 'config.json'}"
        )
        net = PolicyNet(cfg, bf16=bf16)
    load_weights(net, path / "model.safetensors")
    net.eval()
    return net
