"""Recipes: every shipped one parses and validates against the CLI; bad keys and values are refused by line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shortllm.errors import RecipeError
from shortllm.pipeline import RunRequest, apply_overrides, load_recipe, shipped_recipes
from shortllm.pipeline.runner import check_parses
from shortllm.pipeline.stages import stage_args
from shortllm.pipeline.verbs import STAGES, verb_options

SHIPPED = shipped_recipes()
EXPECTED = {"cpu-demo", "shortened-llama-ppl-lora", "shortened-llama-taylor-lora", "shortened-llama-ppl-cpt",
            "shortgpt-bi", "gromov-angular-lora", "sleb", "layerchop-cpt", "minitron-depth-kd"}


def test_the_papers_recipes_are_shipped():
    assert EXPECTED <= set(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_recipe_parses_and_the_cli_accepts_every_stage(name, tmp_path):
    recipe = load_recipe(SHIPPED[name])
    assert recipe.name == name and recipe.source.get("paper") and recipe.description
    assert list(recipe.stages) == [s for s in STAGES if s in recipe.stages]
    # the CLI's own parser takes each stage's arguments (choices, types, required options)
    check_parses(RunRequest(recipe=recipe, out=tmp_path / "run", data_dir=str(tmp_path)))


def test_the_shortened_llama_lora_recipe_has_the_reference_settings():
    stages = load_recipe(SHIPPED["shortened-llama-ppl-lora"]).stages
    assert {k: stages["score"][k] for k in ("criterion", "data", "samples", "seq-len", "seed", "add-bos")} == {
        "criterion": "ppl", "data": "bookcorpus", "samples": 10, "seq-len": 128, "seed": 1234, "add-bos": True}
    r = stages["retrain"]
    assert (r["method"], r["lora-r"], r["lora-alpha"], r["lora-dropout"], r["seq-len"]) == ("lora", 8, 16, 0.05, 256)
    assert r["batch-size"] * r["grad-accum"] == 64 and r["lr"] == 1e-4 and r["weight-decay"] == 0.0
    assert (r["adam-betas"], r["lr-schedule"], r["warmup-steps"]) == ("0.9,0.999", "linear", 100)
    assert r["keep-best"] is True and r["max-eval-rows"] == 2000 and r.get("lora-targets") is None  # all 7
    cpt = load_recipe(SHIPPED["shortened-llama-ppl-cpt"]).stages["retrain"]
    assert (cpt["method"], cpt["adam-betas"], cpt["lr"], cpt["weight-decay"]) == ("cpt", "0.9,0.95", 1e-4, 0.1)
    assert load_recipe(SHIPPED["shortened-llama-taylor-lora"]).stages["score"]["criterion"] == "taylor+"


def test_recipe_keys_are_the_cli_s_long_options():
    # read from the registered commands: an option added to a verb is a recipe key at once
    assert {"keep-best", "adam-betas", "lr-schedule", "lora-r"} <= set(verb_options("retrain"))
    assert {"ppl", "tasks", "limit"} <= set(verb_options("eval"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


GOOD = """name: t
model: m
stages:
  score:
    criterion: ppl
  prune:
    ratio: 0.2
"""


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("    ratio: 0.2", "    ratio: 0.2\n    rattio: 3"), r"r.yaml, line 8: unknown option 'rattio' for stage prune"),
    (GOOD.replace("    ratio: 0.2", "    num_blocks: 3"), r"line 7: unknown option 'num_blocks'.*Did you mean 'num-blocks'"),
    (GOOD + "colour: red\n", r"line 8: unknown key 'colour'"),
    (GOOD.replace("  prune:", "  prnue:"), r"line 6: unknown stage 'prnue'"),
    (GOOD.replace("    ratio: 0.2", "    ratio: lots"), r"line 7: prune.ratio must be a number, not 'lots'"),
    (GOOD.replace("    ratio: 0.2", "    num-blocks: 2.5"), r"line 7: prune.num-blocks must be a whole number"),
    (GOOD.replace("    ratio: 0.2", "    out: x/"), r"line 7: prune.out is set by `shortllm run`"),
    (GOOD.replace("    ratio: 0.2", "    ratio: 0.2\n    ratio: 0.3"), r"line 8: 'ratio' is given twice .*line 7"),
    (GOOD + "  score:\n    seed: 1\n", r"line 8: 'score' is given twice"),
    (GOOD + "  retrain:\n    lr: 0.1\n", r"stage retrain needs 'method'"),
    (GOOD.replace("stages:\n  score:\n    criterion: ppl\n  prune:\n    ratio: 0.2\n",
                  "stages:\n  prune:\n    ratio: 0.2\n  score:\n    seed: 1\n"), r"line 6: stage score comes after prune"),
    (GOOD.replace("    criterion: ppl", "    criterion: [ppl"), r"r.yaml, line \d+: not valid YAML"),
    ("", r"the recipe is empty"),
    ("name: t\n", r"names no stages"),
])
def test_bad_recipes_are_refused_with_the_line(tmp_path, text, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(_write(tmp_path, text))
    assert re.search(message, info.value.one_line()), info.value.one_line()  # the line the CLI prints


def test_overrides_change_the_stage_arguments_and_are_checked(tmp_path):
    recipe = load_recipe(_write(tmp_path, GOOD))
    done = apply_overrides(recipe, ["prune.ratio=0.25", "score.samples=3", "score.add-bos=true"])
    assert done[0] == {"stage": "prune", "option": "ratio", "value": 0.25}
    req = RunRequest(recipe=recipe, out=tmp_path / "run")
    assert stage_args(req, "score") == ["--criterion", "ppl", "--samples", "3", "--add-bos", "--ratio", "0.25",
                                        "--model", "m"]
    assert stage_args(req, "prune") == ["--ratio", "0.25", "--model", "m", "--scores", str(tmp_path / "run/score")]
    for bad, message in [("prune.ratio", "is not stage.option=value"), ("prune.ratio=x", "must be a number"),
                         ("retrain.lr=1", "has no retrain stage"), ("score.nope=1", "unknown option 'nope'"),
                         ("bogus.x=1", "unknown stage 'bogus'")]:
        with pytest.raises(RecipeError, match=message):
            apply_overrides(recipe, [bad])
