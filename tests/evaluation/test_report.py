"""Labels from manifests, metric extraction from lm-eval results, and rows with deltas."""

from __future__ import annotations

import json

import pytest

from shortllm.evaluation.lmeval import parse_tasks, summarise
from shortllm.evaluation.report import comparison_rows, label_from_manifest, model_label, task_average
from shortllm.evaluation.run import parse_ppl


def test_label_from_a_pruned_folder(tmp_path):
    assert label_from_manifest(tmp_path) is None
    (tmp_path / "shortllm.json").write_text(json.dumps({"verb": "prune", "results": {
        "removed_original": [20, 21, 22, 23, 24, 25], "achieved_ratio": 0.18, "how": "criterion ppl",
        "scores": {"criterion": "ppl"}}}))
    assert label_from_manifest(tmp_path) == "ppl, -6 blocks, 18.0%"
    assert model_label(str(tmp_path), "dir", str(tmp_path)) == f"{tmp_path.name} (ppl, -6 blocks, 18.0%)"
    assert model_label(None, "alias", "/cache/x") == "smollm2-135m"
    (tmp_path / "shortllm.json").write_text(json.dumps({"verb": "prune", "results": {"removed": [3],
                                                                                   "scores": None}}))
    assert label_from_manifest(tmp_path) == "by hand, -1 block"
    (tmp_path / "shortllm.json").write_text("{broken")
    assert label_from_manifest(tmp_path) is None


def test_summarise_picks_the_paper_metric():
    raw = {"alias": "hellaswag", "acc,none": 0.3, "acc_stderr,none": 0.01, "acc_norm,none": 0.4,
           "acc_norm_stderr,none": 0.02}
    row = summarise("hellaswag", raw, {"original": 10, "effective": 5}, "lm-eval")
    assert (row["metric"], row["value"], row["stderr"], row["samples"]) == ("acc_norm", 0.4, 0.02, 5)
    assert row["metrics"] == {"acc": 0.3, "acc_norm": 0.4}
    other = summarise("lambada_openai", {"perplexity,none": 4.0, "acc,none": 0.6, "acc_stderr,none": "N/A"},
                      None, "lm-eval")
    assert (other["metric"], other["value"], other["stderr"]) == ("acc", 0.6, None)


def test_rows_and_deltas():
    models = [
        {"ppl": {"wikitext2": 20.0}, "tasks": {"piqa": {"metric": "acc", "value": 0.70, "stderr": 0.01}},
         "average": 0.70},
        {"ppl": {"wikitext2": 30.0}, "tasks": {"piqa": {"metric": "acc", "value": 0.65, "stderr": 0.01}},
         "average": 0.65},
    ]
    rows = comparison_rows(models)
    assert [r.name for r in rows] == ["ppl wikitext2", "piqa (acc)", "average"]
    assert rows[0].deltas == [0.0, 10.0] and not rows[0].higher_is_better
    assert rows[1].deltas[1] == pytest.approx(-0.05) and rows[1].stderrs == [0.01, 0.01]
    assert task_average({"a": {"value": 0.5}, "b": {"value": 0.7}, "c": {"value": None}}) == pytest.approx(0.6)
    assert task_average({}) is None


def test_parsing_lists():
    assert parse_tasks(None)[:2] == ["boolq", "piqa"] and len(parse_tasks(None)) == 7
    assert parse_tasks("none") == [] and parse_tasks("piqa, arc_easy,piqa") == ["piqa", "arc_easy"]
    assert parse_ppl(None) == ["wikitext2", "ptb"] and parse_ppl("") == [] and parse_ppl("c4,ptb:test") == [
        "c4", "ptb:test"]
