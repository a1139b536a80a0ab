"""``shortllm run``: run a recipe (score, prune, retrain, eval, bench) into one run folder with one report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from shortllm.cli import applies
from shortllm.cli.options import DataDirOpt, JsonOpt, _out_path
from shortllm.cli.help import in_group
from shortllm.cli.output import console, err_console, print_json, print_path, state

RecipeArg = Annotated[Optional[str], typer.Argument(
    help="A shipped recipe's name (see --list) or a recipe .yaml file.", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override one stage option, e.g. --set retrain.max-steps=5 (repeatable; value read as YAML).",
    show_default=False, rich_help_panel='Run')]
RunOutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="The run folder (default: runs/RECIPE-NAME). Rerunning into it skips finished stages.",
    show_default=False, rich_help_panel='Run', parser=_out_path, metavar="<path>")]
RunModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Run the recipe on this model instead of the one it names.", show_default=False, rich_help_panel='Run')]


def run(
    ctx: typer.Context,
    recipe: RecipeArg = None,
    out: RunOutOpt = None,
    model: RunModelOpt = None,
    set_: SetOpt = None,
    data_dir: in_group(DataDirOpt, "Run") = None,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped recipes and exit.", rich_help_panel='Run')] = False,
    show: Annotated[bool, typer.Option("--show", help="Print the recipe's stage commands and exit.", rich_help_panel='Run')] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a recipe: its stages in order into one run folder, with a side-by-side report.

    Examples:

    \b
      shortllm run --list
      shortllm run cpu-demo --set retrain.max-steps=2 --set eval.limit=2 --out demo-run/
      shortllm run shortened-llama-ppl-lora -m meta-llama/Llama-2-7b-hf --data-dir ../shared/data --show

    Each stage is the verb of the same name with the recipe's options, writing into RUN/STAGE; the models flow
    from stage to stage (original -> pruned -> healed) and report.md / report.json put their numbers side by
    side. Running again skips the stages whose options and inputs are unchanged and resumes an interrupted
    retrain. See docs/recipes.md for the shipped recipes and their sources.
    """
    applies.check_given(ctx, applies.RUN)
    from shortllm.errors import RecipeError
    from shortllm.pipeline import RunRequest, apply_overrides, find_recipe, load_recipe, run_recipe, shipped_recipes

    if list_:
        _list(shipped_recipes(), json_out)
        return
    if recipe is None:
        raise RecipeError("name a recipe", "e.g. `shortllm run cpu-demo`; `shortllm run --list` shows them all")
    loaded = load_recipe(find_recipe(recipe))
    overrides = apply_overrides(loaded, list(set_ or []))
    request = RunRequest(recipe=loaded, out=out or Path("runs") / loaded.name, model=model, data_dir=data_dir,
                         overrides=overrides, command=shlex.join(["shortllm", *sys.argv[1:]]))
    if show:
        _show(request)
        return

    def on_stage(stage: str, event: str, detail: str) -> None:
        if not state["quiet"]:
            text = f"expected cost: {detail}" if event == "cost" else detail
            err_console.print(f"[{stage}] {text}", markup=False, highlight=False, soft_wrap=True)

    import contextlib

    # --json: stdout is the one JSON object; the stages' own tables go to stderr
    with contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext():
        result = run_recipe(request, on_stage=on_stage)
    if json_out:
        print_json({"out": str(result.out), "stages": result.stages, "finished": result.finished,
                    "report": result.report})
        return
    if result.finished:
        console.print((result.out / "report.md").read_text(), markup=False, highlight=False, soft_wrap=True)
        print_path("Run folder ", result.out)
    else:
        print_path("Stopped early; run the same command again to continue. Run folder ", result.out)


def _list(recipes: dict[str, Path], json_out: bool) -> None:
    from shortllm.pipeline import load_recipe

    rows = []
    for name, path in recipes.items():
        r = load_recipe(path)
        rows.append({"name": name, "description": r.description, "stages": list(r.stages),
                     "paper": r.source.get("paper", ""), "cost": r.cost or None})
    if json_out:
        print_json({"recipes": rows})
        return
    for row in rows:
        cost = f" Cost: {row['cost']}." if row["cost"] else ""
        console.print(f"{row['name']}: {row['description']} [{' -> '.join(row['stages'])}]{cost}", markup=False,
                      highlight=False, soft_wrap=True)


def _show(request) -> None:
    import shlex as _shlex

    from shortllm.pipeline.stages import stage_args

    if request.recipe.cost:
        console.print(f"# expected cost: {request.recipe.cost}", markup=False, highlight=False, soft_wrap=True)
    for stage in request.recipe.stages:
        args = stage_args(request, stage) + ["--out", str(request.out / stage)]
        console.print(_shlex.join(["shortllm", stage, *args]), markup=False, highlight=False, soft_wrap=True)
