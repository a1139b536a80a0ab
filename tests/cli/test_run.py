"""``shortllm run`` through the CLI: --list, --show, one-line errors, and the CPU demo recipe end to end."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_list_names_every_shipped_recipe():
    from shortllm.pipeline import shipped_recipes

    result = run_cli("run", "--list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)["recipes"]
    names = [r["name"] for r in rows]
    assert names == list(shipped_recipes()) and "shortened-llama-ppl-lora" in names
    # the demo says what it costs (measured); recipes without a measured cost say nothing
    cost = {r["name"]: r["cost"] for r in rows}
    assert cost["cpu-demo"].startswith("about 4 minutes on a quiet 2-core CPU")
    assert cost["shortened-llama-ppl-lora"] is None


def test_the_cost_is_shown_before_the_commands_and_must_be_text(tmp_path):
    result = run_cli("run", "cpu-demo", "--show")
    assert result.stdout.splitlines()[0].startswith("# expected cost: about 4 minutes")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ncost: 5\nstages:\n  prune: {ratio: 0.2}\n")
    result = run_cli("run", recipe, "--show")
    assert result.exit_code == 2 and "'cost' must be text" in result.stderr


def test_show_prints_each_stage_as_the_cli_command_it_runs(tmp_path):
    result = run_cli("run", "shortened-llama-ppl-lora", "--show", "--out", tmp_path / "r", "--data-dir", "/d",
                     "--set", "retrain.max-steps=10")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["score", "prune", "retrain", "eval", "bench"]
    assert "--max-steps 10 " in lines[2] and f"--model {tmp_path / 'r/prune'}" in lines[2]
    assert "--data-dir /d" in lines[0] and "--keep-best" in lines[2]
    assert lines[3].endswith(f"--model huggyllama/llama-7b --model {tmp_path / 'r/prune'} --model "
                             f"{tmp_path / 'r/retrain'} --out {tmp_path / 'r/eval'}")
    assert not (tmp_path / "r").exists()  # --show writes nothing


@pytest.mark.parametrize("args, message", [
    (["no-such-recipe"], "error: no recipe named 'no-such-recipe'. Shipped recipes: cpu-demo, "),
    (["cpu-demo", "--set", "retrain.lr=fast"], "error: --set 'retrain.lr=fast': retrain.lr must be a number"),
    (["cpu-demo", "--set", "retrain.maxsteps=3"], "error: --set 'retrain.maxsteps=3': unknown option 'maxsteps' "
                                                  "for stage retrain. Did you mean 'max-steps'?"),
    ([], "error: name a recipe."),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    result = run_cli("run", *args, "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_a_run_whose_first_stage_fails_leaves_nothing(tmp_path):
    """The run folder (and the folders made above it) went on holding a manifest of a run that never ran."""
    result = run_cli("run", "cpu-demo", "--set", "score.samples=0", "--out", tmp_path / "deep" / "r")
    assert result.exit_code == 2 and "--samples 0 / --seq-len 128 must be positive" in result.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "empty").mkdir()
    result = run_cli("run", "cpu-demo", "--set", "score.samples=0", "--out", tmp_path / "empty")
    assert result.exit_code == 2 and list((tmp_path / "empty").iterdir()) == []


def test_an_option_a_stage_would_not_read_is_refused_before_anything_runs(tmp_path):
    result = run_cli("run", "cpu-demo", "--set", "score.norm=2", "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert result.stderr == ("error: stage score: --norm only applies with --criterion magnitude, taylor, taylor+ or "
                             "auto, not ppl. Fix the score options of the recipe (see `shortllm score --help`).\n")
    assert not (tmp_path / "r").exists()


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    result = run_cli("run", "cpu-demo", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "holds no run manifest" in result.stderr
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_the_cpu_demo_recipe_runs_end_to_end_shrunk(tmp_path, demo_dir):
    shrink = ["score.samples=2", "score.seq-len=32", "retrain.max-steps=2", "retrain.seq-len=32",
              "retrain.eval-every=1", "retrain.save-every=1", "retrain.max-eval-rows=2", "eval.limit=2",
              "bench.new-tokens=4", "bench.prompt-len=8", "bench.repeats=1", "bench.warmup=0"]
    args = ["run", "cpu-demo", "--out", tmp_path / "demo"] + [a for s in shrink for a in ("--set", s)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith("[cpu-demo] expected cost: about 4 minutes")  # before the first stage
    run = tmp_path / "demo"
    report = json.loads((run / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["original", "pruned", "healed"]
    original, pruned, healed = report["models"]
    assert (original["blocks"], pruned["blocks"], healed["blocks"]) == (30, 23, 23)  # 20% of 134.5M: 7 blocks
    assert all(m["ppl"]["pydoc"] > 1 and m["bench"] for m in report["models"])
    assert healed["method"] == "lora" and healed["steps"] == 2 and healed["best_step"] in (1, 2)
    assert "| metric | original | pruned | healed |" in result.stdout  # report.md, printed
    record = json.loads((run / "shortllm.json").read_text())
    assert record["recipe"]["name"] == "cpu-demo" and len(record["overrides"]) == len(shrink)
    assert all(s["status"] == "done" for s in record["stages"].values())
