"""`upo mdm train|train-hf`: train the built-in MDM, or a Hugging Face MDM's own code."""

from __future__ import annotations

from .common import command_line


def cmd_mdm_train(args) -> int:
    from ..config import load_config
    from ..training.mdm import MDMTrainConfig, train_mdm
    from ..training.run import claim_run_dir

    overrides = {"steps": args.steps, "threads": args.threads, "dtype": args.dtype}
    cfg = load_config(MDMTrainConfig, args.config, overrides)
    with claim_run_dir(args.out) as out:
        meta = train_mdm(cfg, out, resume=args.resume, command=command_line())
    print(f"wrote {args.out}: {meta['steps']} steps, validation {meta['validation']}")
    return 0


def cmd_mdm_train_hf(args) -> int:
    from ..config import load_config
    from ..training.hf_mdm import HFMDMTrainConfig, train_hf_mdm
    from ..training.run import claim_run_dir

    cfg = load_config(HFMDMTrainConfig, args.config, {"steps": args.steps, "threads": args.threads})
    with claim_run_dir(args.out) as out:
        meta = train_hf_mdm(cfg, out, resume=args.resume, command=command_line())
    print(f"wrote {meta['model']}: {meta['steps']} steps, validation {meta['validation']}")
    return 0


def register(sub) -> None:
    mdm = sub.add_parser("mdm", help="train the built-in masked diffusion model")
    mdm_sub = mdm.add_subparsers(dest="action", required=True)
    p = mdm_sub.add_parser("train", help="train an MDM from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--threads", type=int, help="override the config's torch threads")
    p.add_argument(
        "--dtype",
        choices=["auto", "bfloat16", "float32"],
        help="override the config's dtype (auto: bfloat16 only where the CPU has native bf16)",
    )
    p.set_defaults(func=cmd_mdm_train)
    p = mdm_sub.add_parser(
        "train-hf",
        help="train a Hugging Face MDM (its own code, e.g. LLaDA's) from random weights",
        description="Train a Hugging Face MDM from a YAML config (model_code: a model directory "
        "without weights) on a text task's format; writes OUT/model, a Hugging Face directory.",
    )
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True, help="run directory (the model goes to OUT/model)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, help="override the config's steps")
    p.add_argument("--threads", type=int, help="override the config's torch threads")
    p.set_defaults(func=cmd_mdm_train_hf)
