"""Every recipe in configs/ and experiments/configs/ loads with the dataclass its command uses,
names files that exist (or says how to make them without the test puzzles), and never trains or
validates on a test set. A recipe that rots (a renamed key, a moved checkpoint) fails here instead
of in the middle of someone's hour-long run."""

from __future__ import annotations

from pathlib import Path

import pytest

from upo.config import load_config
from upo.rl.grpo import UPOConfig
from upo.rl.pretrain import PretrainConfig
from upo.training.hf_mdm import HFMDMTrainConfig
from upo.training.mdm import MDMTrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
    (ROOT / "experiments" / "configs").glob("*.yaml")
)
# Which command reads a recipe, by its file name; accelerate's own launcher configs are not ours.
KINDS = (
    ("hf-mdm-", HFMDMTrainConfig),
    ("mdm-", MDMTrainConfig),
    ("policy-pretrain-", PretrainConfig),
    ("upo-", UPOConfig),
    ("llada-", UPOConfig),
)


def config_class(path: Path):
    for prefix, cls in KINDS:
        if path.name.startswith(prefix):
            return cls
    return None


def test_every_recipe_has_a_known_kind():
    unknown = [
        p.name for p in CONFIGS if config_class(p) is None and not p.name.startswith("accelerate-")
    ]
    assert CONFIGS and not unknown


@pytest.mark.parametrize("path", [p for p in CONFIGS if config_class(p)], ids=lambda p: p.name)
def test_recipe_loads_and_names_existing_files(path):
    cfg = load_config(config_class(path), path)
    for field in ("train_data", "val_data"):
        name = getattr(cfg, field, None)
        # text benchmarks are downloaded by the user (the recipe says from where)
        if name and not name.startswith("data/text/"):
            assert "test" not in Path(name).name, f"{path.name}: {field} is a test set"
            if not (ROOT / name).is_file():
                # a GPU recipe may leave its data to the user, but must say how to make it
                # without the test puzzles
                makes = [line for line in path.read_text().splitlines() if f"--out {name}" in line]
                assert makes, f"{path.name}: {field} {name} neither exists nor is made by a command"
                assert all("--exclude" in line and "test" in line for line in makes), (
                    f"{path.name}: the command that makes {name} does not exclude the test set"
                )
    for field in ("mdm", "pretrained", "init_from"):
        name = getattr(cfg, field, None)
        # runs/ holds what exploratory recipes make first (their commands are in experiments/README.md)
        if isinstance(name, str) and name.startswith("checkpoints/"):
            assert (ROOT / name).is_dir(), f"{path.name}: {field} {name} does not exist"
