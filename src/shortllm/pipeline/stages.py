"""What a run is asked (``RunRequest``) and each stage's command line within it: shared by the runner and the
report, below both."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.pipeline.recipe import Recipe
from shortllm.pipeline.verbs import verb_options

MANIFEST = "shortllm.json"


@dataclass
class RunRequest:
    """One ``shortllm run``: the checked recipe (overrides applied), where it runs, and what the machine adds."""

    recipe: Recipe
    out: Path
    model: str | None = None  # replaces the recipe's model
    data_dir: str | None = None
    overrides: list[dict[str, Any]] = field(default_factory=list)
    command: str = "shortllm run"

    @property
    def source_model(self) -> str | None:
        return self.model or self.recipe.model


def _flags(stage: str, options: dict[str, Any]) -> list[str]:
    """A stage's recipe options as command-line arguments (None: the verb's default, left out)."""
    specs, args = verb_options(stage), []
    for key, value in options.items():
        spec = specs[key]
        if value is None:
            continue
        if spec.kind is bool:
            if value:
                args.append(spec.flag)
            elif spec.off_flag:
                args.append(spec.off_flag)
            continue
        for v in value if isinstance(value, list) else [value]:
            args += [spec.flag, str(v)]
    return args


def stage_args(req: RunRequest, stage: str) -> list[str]:
    """The arguments of ``stage`` as ``shortllm STAGE ...`` would take them, without --out/--overwrite/--resume.

    Models are wired from the run: score and prune read the recipe's model, retrain the pruned one, eval and bench
    every model of the run (original, pruned, healed) side by side; prune reuses the run's scores.
    """
    recipe, run = req.recipe, req.out
    opts = dict(recipe.stages[stage])
    model = req.source_model
    if stage == "score" and "prune" in recipe.stages:
        # sleb and angular choose the blocks while scoring: tell them how many the prune stage removes
        prune = recipe.stages["prune"]
        if opts.get("num-blocks") is None and opts.get("ratio") is None:
            for key in ("num-blocks", "ratio"):
                if prune.get(key) is not None:
                    opts[key] = prune[key]
    args = _flags(stage, opts)
    if req.data_dir and "data-dir" in verb_options(stage):
        args += ["--data-dir", req.data_dir]
    models: list[str | None]
    if stage in ("score", "prune"):
        models = [model]
    elif stage == "retrain":
        models = [str(run / "prune") if "prune" in recipe.stages else model]
    else:
        models = [model] + [str(run / s) for s in ("prune", "retrain") if s in recipe.stages]
        if models[0] is None and len(models) > 1:
            from shortllm.models.demo import DEMO_ALIAS

            models[0] = DEMO_ALIAS
    for m in models:
        if m is not None:
            args += ["--model", m]
    if stage == "prune" and "score" in recipe.stages and opts.get("blocks") is None:
        args += ["--scores", str(run / "score")]
    return args


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
