"""The verbs a recipe may name, read from the registered CLI commands themselves (so recipes cannot drift).

Each stage of a recipe is one verb of ``shortllm``; its options are the verb's long option names without the
dashes (``seq-len``, ``lora-r``). They are taken from the typer/click parameters of the commands registered in
``cli/app.py``, so a recipe accepts exactly what the command line accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, get_args, get_origin

# Stages in the only order data can flow: each may use the outputs of those before it.
STAGES = ("score", "prune", "retrain", "eval", "bench")
# Set by `shortllm run` itself: the model, where each stage writes, how it reruns or resumes, how it prints.
RESERVED = {
    "out": "each stage writes into its own folder of the run",
    "model": "name the model once, at the top of the recipe (or with `shortllm run -m`)",
    "scores": "prune reuses the run's score stage when the recipe has one",
    "overwrite": "a stage whose options changed is rerun in place",
    "resume": "an interrupted retrain is resumed by running the recipe again",
    "json": "the run writes report.json",
    "dry-run": "a recipe runs its stages",
    "data-dir": "give it to `shortllm run --data-dir` (it is a property of the machine, not of the recipe)",
    "checkpoint-dir": "checkpoints stay in the run folder, where a rerun finds them",
    "help": "not an option",
}


@dataclass(frozen=True)
class OptionSpec:
    """One long option of a verb: its recipe key, flag spellings, value type and whether it repeats."""

    key: str  # the recipe key: the long option without "--"
    flag: str  # "--seq-len"
    off_flag: str | None  # "--no-add-bos" for boolean on/off pairs
    kind: type  # bool | int | float | str
    multiple: bool
    required: bool


def _kind(annotation: Any) -> type:
    """bool/int/float/str of a typer parameter's annotation (Optional[...] and list[...] unwrapped)."""
    if get_origin(annotation) in (list, tuple):
        return _kind(get_args(annotation)[0])
    args = [a for a in get_args(annotation) if a is not type(None)]
    if args and get_origin(annotation) is not None:
        return _kind(args[0])
    return annotation if annotation in (bool, int, float) else str


@lru_cache(maxsize=None)
def verb_options(verb: str) -> dict[str, OptionSpec]:
    """The recipe keys of ``verb`` (a registered ``shortllm`` command): key -> :class:`OptionSpec`."""
    cmd = command(verb)
    specs = {}
    for param in cmd.params:
        longs = [o for o in param.opts if o.startswith("--")]
        if not longs:
            continue
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", str)
        off = next((o for o in getattr(param, "secondary_opts", []) if o.startswith("--")), None)
        key = longs[0][2:]
        specs[key] = OptionSpec(key, longs[0], off, bool if getattr(param, "is_flag", False) else _kind(annotation),
                                bool(getattr(param, "multiple", False)), bool(getattr(param, "required", False)))
    return specs


@lru_cache(maxsize=None)
def _group() -> Any:
    import typer

    from shortllm.cli.app import app

    return typer.main.get_command(app)


def command(verb: str) -> Any:
    """The click command registered as ``shortllm VERB``."""
    return _group().commands[verb]
