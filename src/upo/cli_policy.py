"""`upo policy pretrain|train`."""

from __future__ import annotations

import sys


def cmd_pretrain(args) -> int:
    from .cli import _command_line
    from .config import load_config
    from .rl.pretrain import PretrainConfig, pretrain_policy

    cfg = load_config(PretrainConfig, args.config, {"seed": args.seed, "threads": args.threads})
    meta = pretrain_policy(cfg, args.out, resume=args.resume, command=_command_line())
    print(
        f"wrote {args.out}: held-out agreement with {meta['pretrained_on']} {meta['held_out_agreement']:.3f}"
    )
    return 0


def cmd_train(args) -> int:
    from .cli import _command_line
    from .config import load_config
    from .rl.grpo import UPOConfig, train_upo

    overrides = {
        "reference": args.reference,
        "init": args.init,
        "seed": args.seed,
        "steps": args.steps,
        "threads": args.threads,
        "beta": args.beta,
    }
    cfg = load_config(UPOConfig, args.config, overrides)
    meta = train_upo(
        cfg, args.out, resume=args.resume, command=_command_line(), report_to=args.report_to
    )
    print(
        f"wrote {args.out}: {meta.get('steps')} steps, validation {meta.get('validation')}",
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    policy = sub.add_parser("policy", help="pre-train and train learned unmasking policies")
    psub = policy.add_subparsers(dest="action", required=True)
    p = psub.add_parser("pretrain", help="imitate a hand rule on states it visits")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out: visited states and finished epochs are kept",
    )
    p.set_defaults(func=cmd_pretrain)

    t = psub.add_parser("train", help="UPO: KL-regularised GRPO against a reference rule")
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument(
        "--reference", help="confidence | margin | entropy | softmax:TAU | topk:K | none"
    )
    t.add_argument("--init", choices=["pretrained", "random"])
    t.add_argument("--beta", type=float, help="regulariser weight (0 = none)")
    t.add_argument("--seed", type=int)
    t.add_argument("--steps", type=int)
    t.add_argument("--threads", type=int)
    t.add_argument("--resume", action="store_true")
    t.add_argument(
        "--report-to",
        choices=["tensorboard", "wandb", "none"],
        default=None,
        help="also mirror each step's metrics to TensorBoard (DIR/tensorboard) or Weights & "
        "Biases; needs that package installed",
    )
    t.set_defaults(func=cmd_train)
