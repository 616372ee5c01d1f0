"""Shipped checkpoints and puzzle files are named without a path, from any directory, and a local
file or directory of the same name wins (upo.assets)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import upo
from upo import assets
from upo.cli import main
from upo.errors import UpoError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """An empty working directory outside the repository."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_bare_name_finds_the_shipped_file_from_any_directory(elsewhere):
    mdm = Path(assets.find("sudoku4-mdm", "checkpoints"))
    assert mdm.is_absolute() and (mdm / "model.safetensors").is_file()
    assert Path(assets.find("sudoku4-test.jsonl", "data")).is_file()
    assert {"sudoku4-mdm", "sudoku9-mdm", "sudoku9-policy"} <= set(assets.names("checkpoints"))
    assert "upo-sudoku9.yaml" in assets.names("configs")
    # In a source checkout the shipped files are the repository's own: one copy, no duplicate.
    assert assets.shipped_root() == REPO


def test_a_local_file_or_directory_of_that_name_wins(elsewhere):
    (elsewhere / "sudoku4-mdm").mkdir()
    (elsewhere / "sudoku4-test.jsonl").write_text("")
    assert assets.find("sudoku4-mdm", "checkpoints") == "sudoku4-mdm"
    assert assets.find("sudoku4-test.jsonl", "data") == "sudoku4-test.jsonl"


@pytest.mark.parametrize("name", ["./sudoku4-mdm", "x/sudoku4-mdm", "/no/sudoku4-mdm", "", ".."])
def test_a_path_is_never_taken_for_a_shipped_name(elsewhere, name):
    assert assets.shipped("checkpoints", name) is None
    assert assets.find(name, "checkpoints") == name


def test_load_mdm_and_load_policy_take_shipped_names(elsewhere):
    mdm = upo.load_mdm("sudoku9-mdm", dtype="float32")
    policy = upo.load_policy("sudoku9-policy", mdm)
    assert policy.name == "sudoku9-policy"


def test_load_mdm_prefers_a_local_directory_over_the_shipped_one(elsewhere):
    shipped = upo.load_mdm("sudoku4-mdm", dtype="float32")
    # A different model under the shipped name: the local directory is the one loaded.
    shutil.copytree(assets.shipped("checkpoints", "addition-mdm"), elsewhere / "sudoku4-mdm")
    local = upo.load_mdm("sudoku4-mdm", dtype="float32")
    assert local.fingerprint() == upo.load_mdm("addition-mdm", dtype="float32").fingerprint()
    assert local.fingerprint() != shipped.fingerprint()


def test_an_unknown_bare_name_lists_the_shipped_mdms(elsewhere):
    with pytest.raises(UpoError, match=r"sudoku5-mdm: .*shipped: addition-mdm, sudoku4-mdm"):
        upo.load_mdm("sudoku5-mdm")


def test_eval_of_a_shipped_mdm_by_name_from_an_empty_directory(elsewhere, capsys):
    argv = ["eval", "--task", "sudoku4", "--mdm", "sudoku4-mdm", "--data", "sudoku4-test.jsonl"]
    assert main([*argv, "--n", "5", "--policies", "confidence"]) == 0
    out = capsys.readouterr().out
    assert "sudoku4, 5 items, MDM sudoku4-mdm" in out and "| confidence |" in out
    assert list(elsewhere.iterdir()) == []  # nothing written where the user stands


def test_eval_with_a_misspelt_name_is_one_line(elsewhere, capsys):
    argv = ["eval", "--task", "sudoku4", "--mdm", "sudoku4-mdn", "--data", "sudoku4-test.jsonl"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("upo: error: sudoku4-mdn: ")
    assert "shipped: addition-mdm, sudoku4-mdm" in err[0]


def test_eval_help_names_the_shipped_checkpoints_and_who_wins(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a shipped MDM by name (addition-mdm, sudoku4-mdm, sudoku9-mdm" in text
    assert "a shipped policy by name" in text and "sudoku9-policy" in text
    assert text.count("a local directory of that name wins") == 2


def test_plot_of_a_shipped_checkpoint_writes_here_not_into_it(elsewhere, capsys):
    assert main(["plot", "sudoku9-policy"]) == 0
    assert (elsewhere / "sudoku9-policy-training_curves.png").is_file()
    assert not (assets.shipped("checkpoints", "sudoku9-policy") / "training_curves.png").exists()
