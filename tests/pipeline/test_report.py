"""The side-by-side report from stage manifests: every model's numbers in its own column, nothing guessed."""

from __future__ import annotations

import json
from pathlib import Path

from shortllm.pipeline import RunRequest, load_recipe
from shortllm.pipeline.report import build_report, render_markdown

RECIPE = """name: r
model: base/model
stages:
  prune: {num-blocks: 2}
  retrain: {method: lora}
  eval: {tasks: piqa}
  bench: {}
"""


def _manifest(run: Path, stage: str, results: dict) -> None:
    (run / stage).mkdir(parents=True)
    (run / stage / "shortllm.json").write_text(json.dumps({"verb": stage, "results": results}))


def test_tasks_ppl_bench_and_sizes_land_in_each_model_s_column(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    run = tmp_path / "run"
    req = RunRequest(recipe=load_recipe(path), out=run)
    _manifest(run, "prune", {"params_before": 1000, "params_after": 800, "num_blocks_before": 10,
                             "num_blocks_after": 8, "removed_original": [6, 7], "achieved_ratio": 0.2})
    _manifest(run, "retrain", {"method": "lora", "steps": 9, "tokens_seen": 99, "initial_eval_loss": 3.0,
                               "final_eval_loss": 2.5, "best": {"step": 6, "eval_loss": 2.25}})
    specs = ["base/model", str(run / "prune"), str(run / "retrain")]
    _manifest(run, "eval", {"settings": {"protocol": "paper", "seq_len": 128, "limit": None}, "models": [
        {"model": s, "ppl": {"wikitext2": p}, "tasks": {"piqa": {"value": a, "metric": "acc_norm"}}, "average": a}
        for s, p, a in zip(specs, [10.0, 20.0, 15.0], [0.7, 0.6, 0.65])]})
    _manifest(run, "bench", {"results": [
        {"model": s, "batch_size": 1, "prompt_len": 64, "new_tokens": 128, "decode_tokens_per_s": t,
         "speedup": t / 50.0, "trust": {"trusted": True}} for s, t in zip(specs, [50.0, 60.0, 61.0])]})
    report = build_report(req, run)
    original, pruned, healed = report["models"]
    assert (original["model"], original["params"], original["blocks"]) == ("base/model", 1000, 10)
    assert (pruned["params"], pruned["blocks"], pruned["removed_blocks"]) == (800, 8, [6, 7])
    assert (healed["held_out_loss_before"], healed["held_out_loss_after"], healed["best_step"]) == (3.0, 2.25, 6)
    assert [m["ppl"]["wikitext2"] for m in report["models"]] == [10.0, 20.0, 15.0]
    assert [m["tasks"]["piqa"] for m in report["models"]] == [0.7, 0.6, 0.65]
    assert [m["bench"][0]["decode_tokens_per_s"] for m in report["models"]] == [50.0, 60.0, 61.0]
    table = render_markdown(report)
    assert "| ppl wikitext2 | 10.00 | 20.00 | 15.00 |" in table
    assert "| piqa acc | 0.7000 | 0.6000 | 0.6500 |" in table
    assert "| held-out loss (kept weights) | - | - | 3.0000 -> 2.2500 (best: step 6) |" in table
    assert "| decode tok/s (batch 1, prompt 64, 128 new) | 50.0 | 60.0 | 61.0 |" in table


def test_stages_not_run_leave_their_numbers_out(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    run = tmp_path / "run"
    run.mkdir()
    report = build_report(RunRequest(recipe=load_recipe(path), out=run), run)
    assert [m["name"] for m in report["models"]] == ["original", "pruned", "healed"]
    assert all("ppl" not in m and "bench" not in m and m["params"] is None for m in report["models"])
    assert "| parameters | - | - | - |" in render_markdown(report)
