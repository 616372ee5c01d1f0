"""upo as an lm-evaluation-harness model (`--model upo`, upo.lmeval), run through lm-eval's own
entry points on a tiny local task with the real LLaDA code at toy size (tests/reference_models.py;
skipped, saying why, when ../shared/reference-models is absent).

What is checked: every answer lm-eval records is upo's exact decode of that prompt alone, cut at
the task's stop string; the metric is computed on those answers; the command line writes its
results file; loglikelihood requests and bad model_args are refused with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import upo
from reference_models import model_dir, require_reference_models
from upo.errors import UpoError

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-eval is in the dev extras; this environment lacks it"
)
from upo.lmeval import UpoLM, cut_at_stops, parse_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["what is 2+2?", "hi", "count: 1 2 3 4 5 6 7 8 9"]
SETTINGS = "dtype=float32,gen_length=16,block_length=8,policy=margin"


@pytest.fixture(scope="module")
def llada_dir(tmp_path_factory):
    require_reference_models()
    return model_dir("llada", tmp_path_factory.mktemp("lmeval-model"), seed=1)


@pytest.fixture(scope="module")
def alone(llada_dir):
    """Each question decoded alone with upo.generate, uncut: what lm-eval's answers must be cut
    from."""
    mdm = upo.load_mdm(llada_dir, trust_remote_code=True, dtype="float32")
    texts = []
    for q in QUESTIONS:
        ids = mdm.tokenizer(q)["input_ids"]
        out = upo.generate(mdm, [ids], "margin", gen_length=16, block_length=8)
        texts.append(out.texts[0])
    return texts


def write_task(folder: Path, stop: str, answers: list[str]) -> Path:
    """A generative lm-eval task over a local JSONL file: prompt = question, target = answer,
    exact match, the given stop string."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS, answers))
    )
    (folder / "upo_tiny.yaml").write_text(
        "task: upo_tiny\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{test: {json.dumps(str(data))}}}\n"
        f"  cache_dir: {json.dumps(str(folder / 'cache'))}\n"
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{answer}}"\n'
        f"generation_kwargs: {{until: [{json.dumps(stop)}], do_sample: false}}\n"
        "metric_list:\n"
        "  - metric: exact_match\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
    )
    return folder


def stop_and_expected(alone: list[str]) -> tuple[str, list[str]]:
    """A stop string found inside the first answer (not at its start), and every answer cut at
    its first occurrence."""
    first = alone[0]
    stop = next(
        first[i : i + 2] for i in range(1, len(first) - 1) if first[i : i + 2] not in first[:i]
    )
    expected = [text[: text.find(stop)] if stop in text else text for text in alone]
    assert 0 < len(expected[0]) < len(first)  # the stop really cuts the first answer
    return stop, expected


def test_simple_evaluate_runs_upo_on_real_llada_code(llada_dir, alone, tmp_path):
    from lm_eval.tasks import TaskManager

    stop, expected = stop_and_expected(alone)
    # The first document's target is its expected answer, the others' are not theirs.
    targets = [expected[0], "no", "no"]
    tasks = write_task(tmp_path / "tasks", stop, targets)
    results = lm_eval.simple_evaluate(
        model="upo",
        model_args=f"pretrained={llada_dir},trust_remote_code=true,{SETTINGS}",
        tasks=["upo_tiny"],
        task_manager=TaskManager(include_path=str(tasks)),
        batch_size=2,  # a full batch of two prompts of different lengths, then one
        log_samples=True,
    )
    samples = sorted(results["samples"]["upo_tiny"], key=lambda s: s["doc_id"])
    answers = [s["resps"][0][0] for s in samples]
    assert answers == expected
    assert all(stop not in a for a in answers)
    assert results["results"]["upo_tiny"]["exact_match,none"] == pytest.approx(1 / 3)
    assert results["config"]["model"] == "upo"


def test_command_line_writes_the_results_file(llada_dir, alone, tmp_path):
    stop, expected = stop_and_expected(alone)
    tasks = write_task(tmp_path / "tasks", stop, expected)  # every target right
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable, "-m", "upo.lmeval", "run", "--model", "upo",
            "--model_args", f"pretrained={llada_dir},trust_remote_code=true,{SETTINGS}",
            "--tasks", "upo_tiny", "--include_path", str(tasks), "--batch_size", "3",
            "--output_path", str(out), "--log_samples",
        ],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(out.rglob("results_*.json"))
    assert len(written) == 1, list(out.rglob("*"))
    record = json.loads(written[0].read_text())
    assert record["results"]["upo_tiny"]["exact_match,none"] == 1.0
    assert record["config"]["model_args"]["policy"] == "margin"
    logged = [json.loads(line) for line in next(out.rglob("samples_upo_tiny_*.jsonl")).open()]
    assert sorted((s["doc_id"], s["resps"][0][0]) for s in logged) == list(enumerate(expected))


def test_loglikelihood_requests_are_refused_with_the_reason(llada_dir):
    lm = UpoLM(pretrained=str(llada_dir), trust_remote_code=True, dtype="float32", device="cpu")
    with pytest.raises(NotImplementedError, match="does not score given continuations"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="only generates"):
        lm.loglikelihood_rolling([])
    assert lm.generate_until([]) == []
    assert lm.batch_size == 8 and lm.policy.name == "confidence"


def test_bad_model_args_are_one_clear_line_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "upo.lmeval", "run", "--model", "upo", "--tasks", "gsm8k",
            "--model_args", f"pretrained={tmp_path / 'missing'},gen_lenght=16",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "upo: error: model_args: unknown argument 'gen_lenght'; valid: "
        + ", ".join(__import__("upo.lmeval").lmeval.ARGS)
    )


@pytest.mark.parametrize(
    "given, fragment",
    [
        ({}, "pretrained=DIR_OR_HUB_ID"),
        ({"pretrained": "x", "model_path": "y"}, "give pretrained or model_path"),
        ({"pretrained": "x", "trust_remote_code": 1}, "trust_remote_code must be bool"),
        ({"pretrained": "x", "trust_remote_code": "false"}, "trust_remote_code must be bool"),
        ({"pretrained": "x", "gen_length": 1.5}, "gen_length must be int"),
        ({"pretrained": "x", "batch_size": "auto"}, "batch_size 'auto': give a number"),
        ({"pretrained": "x", "batch_size": 0}, "batch_size must be at least 1"),
    ],
)
def test_model_args_are_checked(given, fragment):
    with pytest.raises(UpoError, match=fragment):
        parse_args(given)


def test_model_args_defaults_and_alias():
    args = parse_args({"model_path": "GSAI-ML/LLaDA-8B-Instruct", "batch_size": "16"})
    assert args["pretrained"] == "GSAI-ML/LLaDA-8B-Instruct"
    assert args["batch_size"] == 16
    assert (args["gen_length"], args["block_length"], args["policy"]) == (256, 32, "confidence")
    assert args["trust_remote_code"] is False


def test_cut_at_stops():
    assert cut_at_stops("a\n\nQuestion: b", ["Question:", "\n\n"]) == "a"
    assert cut_at_stops("abc", "c") == "ab"
    assert cut_at_stops("abc", None) == "abc"
    assert cut_at_stops("abc", ["", "x"]) == "abc"
