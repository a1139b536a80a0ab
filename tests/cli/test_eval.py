"""`shortllm eval` end to end: tiny models side by side, bad input, and one run on the embedded model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli, tree_digest
from tests.evaluation.helpers import save_tiny_lm, write_data_dir, write_task


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo_dir) -> tuple[Path, Path]:
    """A tiny model with a tokenizer, and the same with block 1 removed by `shortllm prune`."""
    root = tmp_path_factory.mktemp("eval-models")
    tiny = save_tiny_lm(root / "tiny", demo_dir)
    pruned = root / "tiny-pruned"
    result = run_cli("prune", "-m", tiny, "--blocks", "1", "--out", pruned, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return tiny, pruned


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("eval-data"))


def test_side_by_side_json_and_files(models, data, tmp_path):
    tiny, pruned = models
    before = tree_digest(pruned)
    out = tmp_path / "ev"
    result = run_cli("eval", "-m", tiny, "-m", pruned, "--ppl", "wikitext2,ptb", "--tasks", "piqa,winogrande",
                     "--seq-len", "32", "--data-dir", data, "--device", "cpu", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    first, second = report["models"]
    assert first["label"] == "tiny" and second["label"] == "tiny-pruned (by hand, -1 block, " + \
        second["label"].split(", ")[-1]
    for m in (first, second):
        assert set(m["ppl"]) == {"wikitext2", "ptb"} and all(math.isfinite(v) for v in m["ppl"].values())
        assert m["ppl_details"]["ptb"]["split"] == "validation"  # the reference code's PTB split
        assert m["tasks"]["piqa"]["metric"] == "acc" and m["tasks"]["piqa"]["samples"] == 6
        assert m["tasks"]["winogrande"]["stderr"] is not None
        assert m["average"] == pytest.approx((m["tasks"]["piqa"]["value"] + m["tasks"]["winogrande"]["value"]) / 2)
    assert first["ppl"] != second["ppl"]
    assert json.loads((out / "eval.json").read_text())["models"][1]["ppl"] == second["ppl"]
    manifest = json.loads((out / "shortllm.json").read_text())
    assert manifest["verb"] == "eval" and len(manifest["source"]["models"]) == 2
    assert manifest["options"]["seq_len"] == 32 and manifest["options"]["task_sources"]["piqa"].startswith("shortllm")
    assert tree_digest(pruned) == before


def test_table_with_deltas_and_samples(models, data):
    tiny, pruned = models
    result = run_cli("eval", "-m", tiny, "-m", pruned, "--ppl", "wikitext2", "--tasks", "none", "--seq-len", "32",
                     "--ppl-protocol", "sliding", "--stride", "16", "--data-dir", data, "--device", "cpu",
                     "--generate", "The river", "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "ppl wikitext2" in out and "sliding" in out and ("(+" in out or "(-" in out)
    assert out.count("The river") == 2


@pytest.mark.parametrize("args,needles", [
    (["--ppl", "nope"], ["unknown dataset 'nope'", "wikitext2"]),
    (["--ppl-protocol", "strided"], ["unknown perplexity protocol"]),
    (["--seq-len", "512"], ["--seq-len 512 is longer than the context", "256 positions"]),
    (["--ppl", "wikitext2", "--ppl-protocol", "sliding", "--stride", "64", "--seq-len", "32"], ["--stride 64"]),
])
def test_bad_options(models, data, tmp_path, args, needles):
    out = tmp_path / "never"
    result = run_cli("eval", "-m", models[0], "--tasks", "none", "--data-dir", data, "--device", "cpu",
                     "--out", out, *args)
    assert_one_line_error(result, *needles)
    assert not out.exists()


def test_bad_task_files_and_text(models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("eval", "-m", models[0], "--ppl", "none", "--tasks", "piqa", "--data-dir", empty)
    assert_one_line_error(result, "piqa/valid.jsonl not found")
    write_task(empty, "boolq")
    (empty / "boolq" / "dev.jsonl").write_text('{"question": "q", "passage": "p", "answer": "yes"}\n')
    result = run_cli("eval", "-m", models[0], "--ppl", "none", "--tasks", "boolq", "--data-dir", empty)
    assert_one_line_error(result, "dev.jsonl:1 is malformed", "'answer' is not true or false")
    (tmp_path / "blank.txt").write_text("\n \n")
    result = run_cli("eval", "-m", models[0], "--ppl", tmp_path / "blank.txt", "--tasks", "none")
    assert_one_line_error(result, "no text in")


def test_unknown_task_lists_the_known_ones(models, data):
    result = run_cli("eval", "-m", models[0], "--ppl", "none", "--tasks", "piqa,no_such_task_xyz",
                     "--data-dir", data)
    assert_one_line_error(result, "unknown task 'no_such_task_xyz'", "boolq, piqa, hellaswag")


@pytest.mark.slow
def test_embedded_model_small_run(tmp_path):
    data = write_data_dir(tmp_path / "data")
    result = run_cli("eval", "--ppl", "wikitext2", "--tasks", "piqa", "--limit", "4", "--seq-len", "32",
                     "--data-dir", data, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    (m,) = json.loads(result.stdout)["models"]
    assert m["model"] == "smollm2-135m" and 5 < m["ppl"]["wikitext2"] < 500
    assert m["ppl_details"]["wikitext2"]["windows"] == 4 and m["tasks"]["piqa"]["samples"] == 4
