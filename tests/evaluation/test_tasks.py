"""Offline task definitions: readers, bad files, and agreement with lm-eval's own task definitions."""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import pytest
import yaml

from shortllm.errors import DataError
from shortllm.evaluation.lmeval import TaskPlan, plan_tasks, run_tasks
from shortllm.evaluation.tasks import OFFLINE_TASKS, PAPER_TASKS, check_offline_task
from shortllm.evaluation.tasks.utils import READERS, hellaswag_preprocess
from tests.evaluation.helpers import HF_ROWS, write_task

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
# lm-eval's own YAML for each task, and the split its HF dataset is read from.
NATIVE = {
    "piqa": ("piqa/piqa.yaml", "validation"),
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
}


def test_the_paper_tasks_all_have_offline_definitions():
    assert set(PAPER_TASKS) == set(OFFLINE_TASKS)


@pytest.mark.parametrize("name", sorted(HF_ROWS))
def test_readers_give_the_hf_rows(tmp_path, name):
    write_task(tmp_path, name)
    rows = READERS[name](tmp_path)
    expected = HF_ROWS[name]
    assert len(rows) == len(expected) == check_offline_task(name, tmp_path)
    if name in ("arc_easy", "arc_challenge"):  # numbered choices become letters, as lm-eval's old ARC task did
        assert rows[2]["choices"]["label"] == ["A", "B", "C", "D"] and rows[2]["answerKey"] == "A"
        assert rows[0] == expected[0]
    elif name == "openbookqa":
        assert rows == expected
    elif name == "boolq":
        assert [(r["question"], r["passage"], r["label"]) for r in rows] == [
            (r["question"], r["passage"], r["label"]) for r in expected]
    elif name == "hellaswag":  # lm-eval's query capitalises ctx_b, which the file keeps as it was
        assert [r["query"] for r in rows] == [
            "Roof shingle removal: A man is sitting on a roof. He",
            "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"]
        assert [(r["choices"], r["label"]) for r in rows] == [(r["choices"], r["label"]) for r in expected]
    else:
        assert rows == [{k: r[k] for k in rows[0]} for r in expected]


def test_hellaswag_preprocess_matches_lm_eval():
    from lm_eval.tasks.hellaswag.utils import preprocess

    for text in [" A man [header] is [title] here.  Then", "Plain text. [step] Next [substeps] more [x]"]:
        assert hellaswag_preprocess(text) == preprocess(text)


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"piqa/valid.jsonl not found"):
        check_offline_task("piqa", tmp_path)
    write_task(tmp_path, "piqa")
    (tmp_path / "piqa" / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(DataError, match=r"valid-labels.lst is malformed: 2 labels for 6 items"):
        check_offline_task("piqa", tmp_path)
    write_task(tmp_path, "arc_easy")
    path = tmp_path / "arc" / "ARC-Easy-Test.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    with pytest.raises(DataError, match=r"ARC-Easy-Test.jsonl:5 is malformed: not JSON"):
        check_offline_task("arc_easy", tmp_path)
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag" / "hellaswag_val_full.txt").write_text("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(DataError, match=r"hellaswag_val_full.txt:2 is malformed: gold label '7'"):
        check_offline_task("hellaswag", tmp_path)


def _native_task_dir(tmp_path: Path, name: str) -> Path:
    """lm-eval's own YAML for ``name`` (included by absolute path), pointed at a local HF-shaped JSON file."""
    yaml_path, split = NATIVE[name]
    records = tmp_path / "hf" / f"{name}.jsonl"
    records.parent.mkdir(parents=True, exist_ok=True)
    records.write_text("".join(json.dumps(r) + "\n" for r in HF_ROWS[name]))
    folder = tmp_path / "native"
    folder.mkdir(exist_ok=True)
    config = {"include": str(LM_EVAL_TASKS / yaml_path), "task": f"native_{name}", "dataset_path": "json",
              "dataset_name": None, "dataset_kwargs": {"data_files": {split: str(records)}},
              "training_split": None, "validation_split": split if split == "validation" else None,
              "test_split": split if split == "test" else None}
    (folder / f"native_{name}.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_offline_definition_equals_lm_evals_own(tiny_lm, tmp_path, name):
    """Same items, same model: lm-eval's own task and ours build the same requests and the same accuracy."""
    from lm_eval.tasks import TaskManager

    model, tok = tiny_lm
    data = tmp_path / "data"
    write_task(data, name)
    ours = plan_tasks([name], data)
    native = TaskPlan([f"native_{name}"], [], None, manager=TaskManager(
        include_path=str(_native_task_dir(tmp_path, name)), include_defaults=False))

    ours_task = ours.manager.load([name])["tasks"][name]
    native_task = native.manager.load([f"native_{name}"])["tasks"][f"native_{name}"]
    ours_docs, native_docs = list(ours_task.eval_docs), list(native_task.eval_docs)
    assert len(ours_docs) == len(native_docs) == len(HF_ROWS[name])
    for a, b in zip(ours_docs, native_docs):
        assert ours_task.doc_to_text(a) == native_task.doc_to_text(b)
        assert ours_task.doc_to_choice(a) == native_task.doc_to_choice(b)
        assert ours_task.doc_to_target(a) == native_task.doc_to_target(b)

    a = run_tasks(model, tok, ours, batch_size=4)[name]
    b = run_tasks(model, tok, native, batch_size=4)[f"native_{name}"]
    assert a["metric"] == ("acc" if name != "openbookqa" else "acc_norm")
    assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-12) and a["samples"] == len(HF_ROWS[name])
    assert a["source"].startswith("shortllm offline") and b["source"] == "lm-eval"
