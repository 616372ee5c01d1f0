"""A checkpoint directory is input like any other: whatever is in it, upo answers with one line
`upo: error: ...` and exit 2, without allocating what a config.json merely claims, and a training
run never writes into (or swaps away) a directory that is not its own.

The attacks on the weights run in a subprocess under an address-space limit: without the checks
they would allocate many gigabytes, and the limit turns that into a failure instead of a machine
running out of memory.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_reliability import cli_env, mdm_train_config, message_lines, one_line, write_yaml
from upo.checkpoint import prepare_run_dir
from upo.cli import main
from upo.errors import UpoError
from upo.io_utils import read_json
from upo.models.registry import load_mdm

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
MEMORY_CAP = 3 << 30  # bytes of address space: several times what loading a small checkpoint takes
# Loads a checkpoint the way the CLI would, reporting the seconds the load itself took.
LOADER = """
import sys, time
from upo.cli import run_guarded
from upo.models.registry import load_mdm
from upo.policies.learned import load_policy
load = load_mdm if sys.argv[1] == "mdm" else load_policy
start = time.perf_counter()
code = run_guarded(lambda _: load(sys.argv[2]), None)
print(f"seconds {time.perf_counter() - start:.2f}")
sys.exit(code)
"""


def cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def load_capped(kind: str, path: Path) -> tuple[str, float]:
    """Load `path` in a memory-capped process; return its one error line and the load's seconds."""
    done = subprocess.run(
        [sys.executable, "-c", LOADER, kind, str(path)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,  # generous: a load that allocates layer by layer is the failure looked for
        preexec_fn=cap_memory,
    )
    lines = message_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("upo: error: ")
    return lines[0], float(done.stdout.split()[-1])


def copy_with_config(source: str, dest: Path, section: str, **changes) -> Path:
    """A shipped checkpoint whose config.json claims other sizes than its weights have."""
    shutil.copytree(CHECKPOINTS / source, dest)
    config = json.loads((dest / "config.json").read_text())
    config[section].update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


# --- 1. config.json sizes are checked against the weights' header before anything is built -------

MDM_CLAIMS = [
    ({"d_model": 10**6}, ["'blocks.0.ff.0.bias'", "config says"]),
    ({"d_model": 2048, "n_layers": 100}, ["100 layers"]),
    ({"n_layers": 10**6}, ["1000000 layers"]),
    ({"d_model": 2048}, ["'blocks.0.ff.0.bias' has shape (288,)", "(6144,)"]),
    ({"vocab_size": 10**12}, ["'head.bias'", "config says"]),
    ({"seq_len": 10**10, "grid_box": [1, 10**5]}, ["'box.weight'"]),
    ({"position_groups": [[10**12] * 16]}, ["'groups.0.weight'"]),
    ({"d_model": 10**18, "n_heads": 1}, ["config.json", "cannot be built"]),
]


@pytest.mark.parametrize("changes, fragments", MDM_CLAIMS)
def test_mdm_config_claiming_other_sizes_is_refused_without_allocating(
    tmp_path, changes, fragments
):
    ckpt = copy_with_config("sudoku4-mdm", tmp_path / "mdm", "model", **changes)
    line, seconds = load_capped("mdm", ckpt)
    assert "model.safetensors" in line or "config.json" in line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert seconds < 5, line


@pytest.mark.parametrize(
    "changes, fragment",
    [({"width": 10**6}, "config says"), ({"width": 16384}, "config says")],
)
def test_policy_config_claiming_other_sizes_is_refused_without_allocating(
    tmp_path, changes, fragment
):
    ckpt = copy_with_config("sudoku9-policy", tmp_path / "policy", "policy", **changes)
    line, seconds = load_capped("policy", ckpt)
    assert "model.safetensors" in line and fragment in line, line
    assert seconds < 5, line


@pytest.mark.parametrize("name", ["sudoku4-mdm", "addition-mdm", "zebra-mdm"])
def test_shipped_checkpoints_still_load(name):
    """Position groups (addition) and token slots (zebra) size embeddings from config lists: the
    shape check must build those like the real model does."""
    assert load_mdm(CHECKPOINTS / name).cfg.d_model > 0


def rewrite_header(path: Path, header: bytes, length: int | None = None) -> None:
    """Replace the safetensors header (keeping the data), optionally lying about its length."""
    data = path.read_bytes()
    (old,) = struct.unpack("<Q", data[:8])
    path.write_bytes(
        struct.pack("<Q", len(header) if length is None else length) + header + data[8 + old :]
    )


@pytest.mark.parametrize(
    "header, length",
    [
        (b"{}", 2**63),  # a header longer than any file
        (b"[" * 50_000 + b"]" * 50_000, None),
        (b'{"head.bias": {"dtype": "F32", "shape": [5], "data_offsets": [0, 10**9]}}', None),
        (b'{"head.bias": {"dtype": "F32", "shape": [10000000000], "data_offsets": [0, 20]}}', None),
    ],
)
def test_damaged_weight_header_is_one_line(tmp_path, header, length):
    ckpt = tmp_path / "mdm"
    shutil.copytree(CHECKPOINTS / "sudoku4-mdm", ckpt)
    rewrite_header(ckpt / "model.safetensors", header, length)
    with pytest.raises(UpoError) as err:
        load_mdm(ckpt)
    one_line(err, "model.safetensors")


# --- 2. checkpoint JSON that is nested absurdly deep, not UTF-8, or has giant numbers ------------

BAD_JSON = [
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
    ('{"kind": "tiny\u00e9"}'.encode("latin-1"), "not UTF-8"),
    (b'{"steps": 1' + b"0" * 5000 + b"}", "not valid JSON"),
]


@pytest.mark.parametrize("text, fragment", BAD_JSON)
def test_bad_config_json_is_one_line(tmp_path, text, fragment):
    ckpt = tmp_path / "mdm"
    shutil.copytree(CHECKPOINTS / "sudoku4-mdm", ckpt)
    (ckpt / "config.json").write_bytes(text)
    with pytest.raises(UpoError) as err:
        load_mdm(ckpt)
    one_line(err, "config.json", fragment)


@pytest.mark.parametrize("text, fragment", BAD_JSON)
def test_bad_meta_json_is_one_line(tmp_path, text, fragment):
    run = tmp_path / "run"
    shutil.copytree(CHECKPOINTS / "sudoku4-mdm", run)
    (run / "meta.json").write_bytes(text)
    with pytest.raises(UpoError) as err:
        prepare_run_dir(run, {}, resume=True)  # a run without train_state: is it complete?
    one_line(err, "meta.json", fragment)


def test_read_json_decodes_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes('{"name": "caf\u00e9"}'.encode())
    assert read_json(path) == {"name": "caf\u00e9"}


# --- 3. --out must be a run directory, never the current directory or someone's files -----------


def run(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, message_lines(captured.err) + message_lines(captured.out)


def listing(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("out", [".", "./", "..", "{cwd}"])
def test_mdm_train_refuses_the_current_directory(tmp_path, monkeypatch, capsys, out):
    work = tmp_path / "work"
    work.mkdir()
    config = write_yaml(tmp_path / "mdm.yaml", mdm_train_config())
    monkeypatch.chdir(work)
    before = listing(tmp_path)
    code, lines = run(capsys, "mdm", "train", "--config", config, "--out", out.format(cwd=work))
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("upo: error: --out") and "current directory" in lines[0]
    assert listing(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "mdm.yaml",
        "work",
    ]


@pytest.mark.parametrize("resume", [False, True])
def test_mdm_train_refuses_a_directory_that_is_not_a_run(tmp_path, capsys, resume):
    home = tmp_path / "home"
    (home / "src").mkdir(parents=True)
    (home / "notes.txt").write_text("mine\n")
    (home / "src" / "main.py").write_text("print()\n")
    config = write_yaml(tmp_path / "mdm.yaml", mdm_train_config())
    before = listing(tmp_path)
    flags = ["--resume"] if resume else []
    code, lines = run(capsys, "mdm", "train", "--config", config, "--out", home, *flags)
    assert code == 2 and len(lines) == 1, lines
    assert "'notes.txt'" in lines[0] and "not part of a upo run" in lines[0]
    assert listing(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "mdm.yaml"]  # no .old, no tmp


def test_policy_train_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    from test_reliability import upo_config, write_mdm, write_puzzles

    mdm = write_mdm(tmp_path / "mdm")
    data = write_puzzles(tmp_path / "train.jsonl", n=4)
    config = write_yaml(tmp_path / "upo.yaml", upo_config(mdm, data))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    code, lines = run(capsys, "policy", "train", "--config", config, "--out", home)
    assert code == 2 and len(lines) == 1 and "'.bashrc'" in lines[0], lines
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def test_a_run_directory_and_an_empty_one_are_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_run_dir(empty, {}, resume=False) is None
    run = tmp_path / "run"
    shutil.copytree(CHECKPOINTS / "sudoku4-mdm", run)
    (run / "model.safetensors").unlink()
    (run / "tensorboard").mkdir()
    (run / ".metrics.jsonl.k2j4_x9a.tmp").write_text("")  # what a kill mid-write leaves
    assert prepare_run_dir(run, {}, resume=False) is None


# --- 4. --resume of a finished run is "already complete" only for the config it finished --------


def test_resume_of_a_finished_run_compares_its_config(tmp_path, capsys):
    config = write_yaml(tmp_path / "mdm.yaml", mdm_train_config())
    out = tmp_path / "run"
    code, lines = run(capsys, "mdm", "train", "--config", config, "--out", out)
    assert code == 0, lines
    before = listing(out)
    code, lines = run(
        capsys, "mdm", "train", "--config", config, "--out", out, "--resume", "--steps", "400"
    )
    assert code == 2 and len(lines) == 1, lines
    assert "--resume with a different config" in lines[0]
    assert listing(out) == before
    started = time.perf_counter()
    code, lines = run(capsys, "mdm", "train", "--config", config, "--out", out, "--resume")
    assert code == 0 and any("training already complete" in line for line in lines), lines
    assert time.perf_counter() - started < 60 and listing(out) == before
