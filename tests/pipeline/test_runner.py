"""``shortllm run`` on a tiny model: stages wired into one folder, skipped when unchanged, retrain resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shortllm.errors import DataError
from shortllm.pipeline import RunRequest, apply_overrides, load_recipe, run_recipe
from tests.conftest import tree_digest
from tests.training.helpers import make_tiny_model_with_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

RECIPE = """name: tiny
source: {paper: "a test"}
stages:
  score:
    criterion: ppl
    data: pydoc
    samples: 2
    seq-len: 16
    device: cpu
  prune:
    num-blocks: 1
    device: cpu
  retrain:
    method: lora
    data: pydoc:train
    seq-len: 32
    batch-size: 2
    max-steps: 4
    eval-every: 1
    save-every: 1
    max-eval-rows: 2
    keep-best: true
    device: cpu
  eval:
    ppl: pydoc
    tasks: none
    limit: 2
    device: cpu
  bench:
    batch-sizes: "1"
    prompt-len: "8"
    new-tokens: "2"
    warmup: 0
    repeats: 1
    device: cpu
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("tiny") / "m")


def _run(tmp_path: Path, model: Path, sets: list[str] = (), out: str = "run", heal_only: bool = False):
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.split("  eval:")[0] if heal_only else RECIPE)
    recipe = load_recipe(path)
    overrides = apply_overrides(recipe, list(sets))
    events = []
    result = run_recipe(RunRequest(recipe=recipe, out=tmp_path / out, model=str(model), overrides=overrides),
                        on_stage=lambda stage, event, detail: events.append((stage, event)))
    return result, events


def test_a_run_wires_the_stages_reports_side_by_side_and_skips_what_is_done(tmp_path, tiny):
    before = tree_digest(tiny)
    result, events = _run(tmp_path, tiny)
    run = tmp_path / "run"
    assert result.finished and result.stages == dict.fromkeys(["score", "prune", "retrain", "eval", "bench"], "ran")
    assert [e for _, e in events] == ["run"] * 5
    prune = json.loads((run / "prune/shortllm.json").read_text())
    assert prune["results"]["how"].startswith(f"criterion ppl from {run / 'score'}")  # the score stage reused
    retrain = json.loads((run / "retrain/shortllm.json").read_text())
    assert retrain["source"]["spec"] == str(run / "prune") and retrain["results"]["best"]["step"] >= 1
    assert retrain["options"]["command"].startswith("shortllm retrain --method lora")  # the stage's own command
    report = json.loads((run / "report.json").read_text())
    names = [m["name"] for m in report["models"]]
    assert names == ["original", "pruned", "healed"]
    original, pruned, healed = report["models"]
    assert (original["blocks"], pruned["blocks"], healed["blocks"]) == (4, 3, 3)
    assert original["params"] == prune["results"]["params_before"] > pruned["params"] == healed["params"]
    evals = json.loads((run / "eval/shortllm.json").read_text())["results"]["models"]
    assert [m["ppl"]["pydoc"] for m in report["models"]] == [m["ppl"]["pydoc"] for m in evals]
    assert all(len(m["bench"]) == 1 and m["bench"][0]["decode_tokens_per_s"] > 0 for m in report["models"])
    assert healed["best_step"] == retrain["results"]["best"]["step"]
    table = (run / "report.md").read_text()
    assert "| metric | original | pruned | healed |" in table
    assert f"| ppl pydoc | {original['ppl']['pydoc']:.2f} | {pruned['ppl']['pydoc']:.2f} |" in table
    assert tree_digest(tiny) == before  # the input model is untouched

    manifests = {s: (run / s / "shortllm.json").read_bytes() for s in result.stages}
    again, events = _run(tmp_path, tiny)
    assert again.stages == dict.fromkeys(manifests, "skipped") and {e for _, e in events} == {"skip"}
    assert {s: (run / s / "shortllm.json").read_bytes() for s in manifests} == manifests

    # an eval option changed: eval reruns, bench (same models) does not
    changed, _ = _run(tmp_path, tiny, ["eval.limit=3"])
    assert changed.stages == {"score": "skipped", "prune": "skipped", "retrain": "skipped", "eval": "ran",
                              "bench": "skipped"}
    assert json.loads((run / "eval/shortllm.json").read_text())["results"]["settings"]["limit"] == 3
    record = json.loads((run / "shortllm.json").read_text())
    assert record["verb"] == "run" and record["overrides"] == [{"stage": "eval", "option": "limit", "value": 3}]


def test_an_interrupted_retrain_resumes_on_the_next_run(tmp_path, tiny):
    first, _ = _run(tmp_path, tiny, ["retrain.stop-after=2"], heal_only=True)
    assert not first.finished and first.stages == {"score": "ran", "prune": "ran", "retrain": "stopped"}
    assert not (tmp_path / "run/retrain").exists() and (tmp_path / "run/retrain.checkpoints/step-0000002").is_dir()
    second, _ = _run(tmp_path, tiny, heal_only=True)
    assert second.finished and second.stages["retrain"] == "ran" and second.stages["score"] == "skipped"
    results = json.loads((tmp_path / "run/retrain/shortllm.json").read_text())["results"]
    assert results["resumed_from"].endswith("step-0000002") and results["steps"] == 4
    # the same as a run that was never stopped
    _run(tmp_path, tiny, out="whole", heal_only=True)
    other = json.loads((tmp_path / "whole/retrain/shortllm.json").read_text())["results"]
    assert other["best"] == results["best"] and other["final_loss"] == pytest.approx(results["final_loss"], abs=1e-6)


def test_a_failing_first_stage_is_named_and_leaves_no_run_behind(tmp_path, tiny):
    """A run with no finished stage leaves nothing (it kept a manifest of a run that never ran)."""
    with pytest.raises(DataError, match=r"^stage score: "):
        _run(tmp_path, tiny, ["score.data=no-such-file.txt"])
    assert not (tmp_path / "run").exists()
