"""The files upo ships: its checkpoints, product configs and puzzle data, found wherever upo runs.

An installed wheel carries them as package data in `upo/_shipped/{checkpoints,configs,data}`
(setup.py copies the repository's directories there at build time, so the repository keeps one
copy). A source checkout or editable install has no `_shipped`: there they are the repository's
own `checkpoints/`, `configs/` and `data/`. Either way a shipped file is named without a path
(`sudoku9-mdm`, `sudoku9-test.jsonl`), and a local file or directory of that name wins.

Only the standard library here: `upo eval --help` names the shipped checkpoints without torch.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

KINDS = ("checkpoints", "configs", "data")


def shipped_root() -> Path | None:
    """The directory holding checkpoints/, configs/ and data/, or None when upo has none."""
    packaged = resources.files("upo") / "_shipped"
    # A zip import would give a Traversable that is not a path; upo needs real files (torch and
    # safetensors open them by name), so only an unpacked install counts.
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    repo = Path(__file__).resolve().parents[2]  # src/upo/assets.py -> the repository
    if (repo / "pyproject.toml").is_file() and (repo / "checkpoints").is_dir():
        return repo
    return None


def shipped(kind: str, name: str) -> Path | None:
    """The shipped `kind` ("checkpoints", "configs" or "data") called `name`, or None."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of shipped file {kind!r}; valid: {', '.join(KINDS)}")
    root = shipped_root()
    if root is None or not is_bare_name(name):
        return None
    path = root / kind / name
    return path if path.exists() else None


def find(name: str | Path, kind: str) -> str:
    """`name` itself when it exists here or is a path; else the shipped file of that name when
    there is one; else `name` unchanged, so the caller's own "not found" error names it."""
    text = str(name)
    if Path(text).exists():
        return text  # a local file or directory of that name wins
    found = shipped(kind, text)
    return str(found) if found is not None else text


def names(kind: str) -> list[str]:
    """Every shipped `kind` by name, sorted (for help texts and error messages)."""
    root = shipped_root()
    folder = root / kind if root is not None else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def is_bare_name(name: str) -> bool:
    """A name with no directory part: only those are looked up among the shipped files, so that
    `./x`, `dir/x` and absolute paths always mean the user's own."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def shipped_files(kind: str, pattern: str) -> list[Path]:
    """The shipped files of `kind` whose names match the glob `pattern`, sorted."""
    root = shipped_root()
    return sorted((root / kind).glob(pattern)) if root is not None else []


def hint(name: str, kind: str, suffix: str = "") -> str:
    """What to add to a "not found" error for `name`: the shipped names ending in `suffix`, when
    `name` was a bare name (so the user may have meant one of them); else nothing."""
    if not is_bare_name(name):
        return ""
    shipped_names = [n for n in names(kind) if n.endswith(suffix)]
    if not shipped_names:
        return " (this install ships none by name)"
    return f" (nor shipped by that name; shipped: {', '.join(shipped_names)})"
