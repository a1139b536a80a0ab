"""Recipes: a YAML file naming the stages of a run and their options, checked against the CLI.

A recipe (docs/recipes.md)::

    name: cpu-demo
    description: the whole pipeline on the embedded model
    source: {paper: "...", code: "..."}
    cost: "3 min 36 s on a quiet 2-core CPU, peak memory 1.95 GB (measured ...)"
    model: smollm2-135m
    stages:
      score: {criterion: ppl, samples: 10}
      prune: {ratio: 0.2}
      retrain: {method: lora, max-steps: 20}
      eval: {ppl: wikitext2, tasks: none}
      bench: {new-tokens: "32"}

Stage options are the verbs' long option names (:mod:`shortllm.pipeline.verbs`). Every key is checked when the
recipe is read: unknown keys, duplicate keys, options the run sets itself and values of the wrong type are refused
with the file and line. ``--set stage.option=value`` overrides are checked the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shortllm.errors import RecipeError
from shortllm.pipeline.verbs import RESERVED, STAGES, OptionSpec, verb_options

TOP_KEYS = {"name": str, "description": str, "source": dict, "cost": str, "model": str, "notes": str,
            "stages": dict}


@dataclass
class Recipe:
    """A checked recipe: stage -> {option key: value}, in run order."""

    name: str
    path: str
    sha256: str
    model: str | None
    stages: dict[str, dict[str, Any]]
    description: str = ""
    source: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    cost: str = ""  # what one run costs, as measured (time, machine, memory): shown before it runs and by --list
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (stage, key) -> line, for messages


def _where(path: str, node: Any) -> str:
    return f"{path}, line {node.start_mark.line + 1}"


def _scalar(node: Any) -> Any:
    """The Python value of a YAML scalar node (safe tags only)."""
    import yaml

    return yaml.safe_load(yaml.serialize(node))


def _mapping(path: str, node: Any, what: str) -> list[tuple[Any, Any]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise RecipeError(f"{_where(path, node)}: {what} must be a mapping (key: value lines)",
                          "see docs/recipes.md for the layout")
    seen: dict[str, int] = {}
    for key, _ in node.value:
        name = str(_scalar(key)) if isinstance(key, yaml.ScalarNode) else "?"
        if name in seen:
            raise RecipeError(f"{_where(path, key)}: '{name}' is given twice in {what} (first on line {seen[name]})",
                              "keep one of them")
        seen[name] = key.start_mark.line + 1
    return node.value


def check_value(spec: OptionSpec, value: Any, where: str, stage: str) -> Any:
    """``value`` for option ``spec`` if its type fits (None: the verb's default), else a RecipeError at ``where``."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not spec.multiple:
        raise RecipeError(f"{where}: {stage}.{spec.key} takes one value, not a list", "give a single value")
    for v in values:
        ok = {bool: lambda x: isinstance(x, bool),
              int: lambda x: isinstance(x, int) and not isinstance(x, bool),
              float: lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
              str: lambda x: isinstance(x, (str, int, float)) and not isinstance(x, bool)}[spec.kind](v)
        if not ok:
            want = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[spec.kind]
            raise RecipeError(f"{where}: {stage}.{spec.key} must be {want}, not {v!r}",
                              f"see `shortllm {stage} --help` for {spec.flag}")
    return value


def check_option(stage: str, key: str, value: Any, where: str) -> Any:
    """Check one stage option (name and type) as the CLI would take it; returns the value.

    Raises:
        RecipeError: an unknown stage or option, an option the run sets itself, or a value of the wrong type,
            naming ``where`` (file and line, or the --set that gave it).
    """
    if stage not in STAGES:
        raise RecipeError(f"{where}: unknown stage '{stage}'", f"stages are {', '.join(STAGES)}")
    options = verb_options(stage)
    if key in RESERVED:
        raise RecipeError(f"{where}: {stage}.{key} is set by `shortllm run`", RESERVED[key])
    if key not in options:
        near = [k for k in options if k.replace("-", "") == key.replace("-", "").replace("_", "")]
        hint = f"did you mean '{near[0]}'?" if near else f"see `shortllm {stage} --help` for its options"
        raise RecipeError(f"{where}: unknown option '{key}' for stage {stage}", hint)
    return check_value(options[key], value, where, stage)


def load_recipe(path: Path, text: str | None = None) -> Recipe:
    """Read and check the recipe at ``path`` (``text``: its contents, when already read).

    Raises:
        RecipeError: unreadable file, bad YAML, unknown or duplicate keys, wrong types, stages out of order,
            a required option missing; each message names the file and line.
    """
    import yaml

    where = str(path)
    try:
        text = path.read_text(encoding="utf-8") if text is None else text
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read the recipe {path}: {getattr(err, 'strerror', None) or err}",
                          "check the path, or pick one of `shortllm run --list`") from err
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{where}{at}: not valid YAML ({getattr(err, 'problem', None) or err})",
                          "fix the YAML syntax") from err
    if root is None:
        raise RecipeError(f"{where}: the recipe is empty", "see docs/recipes.md for the layout")
    top: dict[str, Any] = {}
    stages: dict[str, dict[str, Any]] = {}
    lines: dict[tuple[str, str], int] = {}
    for key_node, value_node in _mapping(where, root, "the recipe"):
        key = _scalar(key_node)
        if key not in TOP_KEYS:
            raise RecipeError(f"{_where(where, key_node)}: unknown key '{key}'",
                              f"a recipe has {', '.join(TOP_KEYS)}")
        if key == "stages":
            last = -1
            for stage_node, opts_node in _mapping(where, value_node, "stages"):
                stage = _scalar(stage_node)
                if stage not in STAGES:
                    raise RecipeError(f"{_where(where, stage_node)}: unknown stage '{stage}'",
                                      f"stages are {', '.join(STAGES)}")
                if STAGES.index(stage) < last:
                    raise RecipeError(f"{_where(where, stage_node)}: stage {stage} comes after "
                                      f"{STAGES[last]}", f"stages run in the order {', '.join(STAGES)}")
                last = STAGES.index(stage)
                opts: dict[str, Any] = {}
                lines[(stage, "")] = stage_node.start_mark.line + 1
                if not (isinstance(opts_node, yaml.ScalarNode) and _scalar(opts_node) is None):
                    for opt_node, val_node in _mapping(where, opts_node, f"stage {stage}"):
                        opt = str(_scalar(opt_node))
                        if not isinstance(val_node, (yaml.ScalarNode, yaml.SequenceNode)):
                            raise RecipeError(f"{_where(where, val_node)}: {stage}.{opt} must be a value",
                                              "give a number, text, true/false or a list")
                        opts[opt] = check_option(stage, opt, _scalar(val_node), _where(where, opt_node))
                        lines[(stage, opt)] = opt_node.start_mark.line + 1
                stages[stage] = opts
            continue
        value = _scalar(value_node)
        if not isinstance(value, TOP_KEYS[key]):
            raise RecipeError(f"{_where(where, value_node)}: '{key}' must be "
                              f"{'a mapping' if TOP_KEYS[key] is dict else 'text'}", "see docs/recipes.md")
        top[key] = value
    if not stages:
        raise RecipeError(f"{where}: the recipe names no stages", f"add `stages:` with some of {', '.join(STAGES)}")
    recipe = Recipe(name=top.get("name") or path.stem, path=str(path),
                    sha256=hashlib.sha256(text.encode()).hexdigest(), model=top.get("model"), stages=stages,
                    description=top.get("description", ""), source=top.get("source") or {},
                    notes=top.get("notes", ""), cost=top.get("cost", ""), lines=lines)
    check_required(recipe)
    return recipe


def check_required(recipe: Recipe) -> None:
    """Refuse a stage that lacks an option its verb requires (``retrain`` without ``method``).

    Raises:
        RecipeError: naming the stage's line.
    """
    for stage, opts in recipe.stages.items():
        for key, spec in verb_options(stage).items():
            if spec.required and opts.get(key) is None:
                line = recipe.lines.get((stage, ""))
                raise RecipeError(f"{recipe.path}{f', line {line}' if line else ''}: stage {stage} needs '{key}'",
                                  f"add `{key}: ...` (see `shortllm {stage} --help`)")


def apply_overrides(recipe: Recipe, overrides: list[str]) -> list[dict[str, Any]]:
    """Apply ``--set stage.option=value`` overrides in order (the value is read as YAML: 3, 0.5, true, text).

    A stage the recipe lacks cannot be added this way; ``value`` ``null`` restores the verb's default.

    Returns:
        The overrides as records ``{"stage", "option", "value"}`` for the run's manifest.

    Raises:
        RecipeError: a malformed override, an unknown stage or option, a wrong type.
    """
    import yaml

    done = []
    for item in overrides:
        target, eq, raw = item.partition("=")
        stage, dot, key = target.strip().partition(".")
        if not eq or not dot or not key:
            raise RecipeError(f"--set {item!r} is not stage.option=value", "e.g. --set retrain.max-steps=5")
        if stage in STAGES and stage not in recipe.stages:
            raise RecipeError(f"--set {item!r}: the recipe {recipe.name} has no {stage} stage",
                              f"its stages are {', '.join(recipe.stages)}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        value = check_option(stage, key.strip(), value, f"--set {item!r}")
        recipe.stages[stage][key.strip()] = value
        done.append({"stage": stage, "option": key.strip(), "value": value})
    check_required(recipe)
    return done
