"""`upo policy pretrain|train`."""

from __future__ import annotations

import sys

from ..errors import UpoError
from ..policies.registry import reference_help
from .common import command_line


def cmd_pretrain(args) -> int:
    from ..config import from_dict, load_yaml
    from ..rl.pretrain import PretrainConfig, pretrain_policy
    from ..training.run import claim_run_dir

    data = load_yaml(args.config)
    data.update(
        {k: v for k, v in {"seed": args.seed, "threads": args.threads}.items() if v is not None}
    )
    with_mdm_dtype(data, args.dtype)
    cfg = from_dict(PretrainConfig, data, str(args.config))
    with claim_run_dir(args.out) as out:
        meta = pretrain_policy(cfg, out, resume=args.resume, command=command_line())
    print(
        f"wrote {args.out}: held-out agreement with {meta['pretrained_on']} {meta['held_out_agreement']:.3f}"
    )
    return 0


def with_mdm_dtype(data: dict, dtype: str | None) -> None:
    """--dtype: the MDM's arithmetic (mdm_options.dtype), over what the config says."""
    if dtype is not None:
        options = data.get("mdm_options")
        data["mdm_options"] = {**(options if isinstance(options, dict) else {}), "dtype": dtype}


def cmd_train(args) -> int:
    from ..config import from_dict, load_yaml
    from ..rl.grpo import UPOConfig, train_upo
    from ..training.run import claim_run_dir

    overrides = {
        "reference": args.reference,
        "init": args.init,
        "seed": args.seed,
        "threads": args.threads,
        "beta": args.beta,
    }
    data = load_yaml(args.config)
    data.update({k: v for k, v in overrides.items() if v is not None})
    # A budget on the command line replaces the recipe's, in whichever unit it was given.
    if args.steps is not None and args.max_steps is not None:
        raise UpoError("give --steps (rollout rounds) or --max-steps (optimiser steps), not both")
    if args.steps is not None:
        data.update(steps=args.steps, max_steps=None)
    if args.max_steps is not None:
        data.update(max_steps=args.max_steps, steps=None)
    with_mdm_dtype(data, args.dtype)
    cfg = from_dict(UPOConfig, data, str(args.config))
    with claim_run_dir(args.out) as out:
        meta = train_upo(
            cfg, out, resume=args.resume, command=command_line(), report_to=args.report_to
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
    p.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float32"],
        help="the MDM's arithmetic (default: the config's mdm_options, else auto: bfloat16 only "
        "where the CPU has native bf16)",
    )
    p.set_defaults(func=cmd_pretrain)

    t = psub.add_parser("train", help="UPO: KL-regularised GRPO against a reference rule")
    t.add_argument("--config", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--reference", help=reference_help())
    t.add_argument("--init", choices=["pretrained", "random"])
    t.add_argument("--beta", type=float, help="regulariser weight (0 = none)")
    t.add_argument("--seed", type=int)
    t.add_argument(
        "--steps", type=int, help="rollout rounds (each followed by inner_steps updates)"
    )
    t.add_argument("--max-steps", type=int, help="optimiser steps, as TRL's max_steps counts them")
    t.add_argument("--threads", type=int)
    t.add_argument("--resume", action="store_true")
    t.add_argument(
        "--report-to",
        choices=["tensorboard", "wandb", "none"],
        default=None,
        help="also mirror each step's metrics to TensorBoard (DIR/tensorboard) or Weights & "
        "Biases; needs that package installed",
    )
    t.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float32"],
        help="the MDM's arithmetic (default: the config's mdm_options, else auto: bfloat16 only "
        "where the CPU has native bf16)",
    )
    t.set_defaults(func=cmd_train)
