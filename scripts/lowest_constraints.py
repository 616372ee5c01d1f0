"""Print pip constraints that pin each lower bound pyproject.toml declares, for `make test-min`.

Runtime dependencies and the library extras the dev install pulls in (transformers, lm-eval,
math-verify) get their declared lower bound (`numpy>=2.0` -> `numpy==2.0`): that is the oldest
stack upo claims to support, so the suite must pass on it. The test tools themselves (pytest,
hypothesis, ruff, build) keep the exact versions of constraints.txt: they are not upo's
dependencies, and an old ruff would only change lint results. Transitive dependencies are left to
pip, within these pins.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"pytest", "hypothesis", "ruff", "build"}
LOWER = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def recorded() -> dict[str, str]:
    """name -> the `name==version` line of constraints.txt."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            pins[normal(line.split("==")[0])] = line.strip()
    return pins


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = recorded()
    for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
        match = LOWER.match(requirement)
        if match is None:
            print(f"{requirement}: no lower bound to test", file=sys.stderr)
            return 1
        name, lowest = normal(match.group(1)), match.group(2)
        print(pins[name] if name in TOOLS else f"{name}=={lowest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
