"""``shortllm run``: run a recipe's stages in order into one run folder, skipping what is already done.

Layout of a run folder::

    RUN/shortllm.json        the run's manifest: recipe, overrides, and per stage its command, inputs, status
    RUN/score/ prune/ retrain/ eval/ bench/     one verb's --out each (its own shortllm.json inside)
    RUN/retrain.checkpoints/ the retrain's checkpoints (an interrupted retrain resumes from them)
    RUN/report.md, report.json   every model's numbers side by side (pipeline/report.py)

Each stage runs its verb in this process through the CLI's own parser and function (``pipeline/verbs.py``), with
``--out`` set to its folder and ``--model`` wired from the stages before it. A stage is skipped when its folder
holds a manifest and the run's record of it has the same arguments and the same input fingerprints (the manifests
of the stage folders it reads, or the files of a local model). A retrain stopped part-way (Ctrl-C, SIGTERM,
``--stop-after``) is resumed from its checkpoints by running the recipe again with the same options.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.cli.click_errors import click_module, errors_propagate
from shortllm.errors import Interrupted, RecipeError, ShortLLMError
from shortllm.pipeline.stages import MANIFEST, RunRequest, stage_args, write_json
from shortllm.pipeline.verbs import command
from shortllm.tempdirs import make_parents, remove_created

log = logging.getLogger(__name__)

SESSION_ONLY = {"--stop-after"}  # how far this session goes, not what the stage makes: not part of its identity
# (stage, event, detail): event is "skip" (detail: why), "run" (detail: the command), "stopped" (detail: why);
# ("RECIPE", "cost", the recipe's measured cost) once the run's options are checked, before the first stage
StageCallback = Callable[[str, str, str], None]


@dataclass
class RunResult:
    """What ``run_recipe`` did: per stage "ran" | "skipped" | "stopped", and the report."""

    out: Path
    stages: dict[str, str]
    report: dict[str, Any]
    finished: bool


def _fingerprint(spec: str, run: Path) -> str:
    """What a stage input is now: a run folder's manifest hash, a local model's file list, else the spec."""
    path = Path(spec).expanduser()
    if (path / MANIFEST).is_file() and path.resolve().parent == run.resolve():
        return "manifest:" + hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()[:16]
    if path.exists():
        files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
        listing = [(str(p.relative_to(path)) if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
                   for p in files]
        return "files:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]
    return "spec:" + spec


def _identity(req: RunRequest, args: list[str]) -> dict[str, Any]:
    """What makes a stage's output: its arguments (session-only ones left out) and its inputs' fingerprints."""
    kept, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in SESSION_ONLY:
            skip = True
            continue
        kept.append(a)
    inputs = {}
    for flag, value in zip(args, args[1:]):
        if flag in ("--model", "--scores", "--teacher", "--eval-data") or (flag == "--data" and Path(value).exists()):
            inputs[value] = _fingerprint(value, req.out)
    return {"args": kept, "inputs": inputs}


def _read_run_manifest(run: Path) -> dict[str, Any]:
    """The run folder's manifest, or {} for a new folder.

    Raises:
        RecipeError: the folder holds something other than a shortllm run.
    """
    path = run / MANIFEST
    if run.exists() and not run.is_dir():
        raise RecipeError(f"the run folder {run} is a file", "choose another --out")
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RecipeError(f"cannot read {path} ({err})", "choose another --out, or delete the file") from err
        if manifest.get("verb") != "run":
            raise RecipeError(f"{run} is the output of `shortllm {manifest.get('verb')}`, not a run folder",
                              "choose another --out")
        return manifest
    if run.is_dir() and any(run.iterdir()):
        raise RecipeError(f"{run} is not empty and holds no run manifest ({MANIFEST})",
                          "choose a new or empty --out (a run folder is reused to skip finished stages)")
    return {}


def invoke(stage: str, args: list[str]) -> None:
    """Run ``shortllm STAGE ARGS`` in this process: the CLI's parser and the verb's own function.

    The verb's errors propagate (the caller's one error handler shows them); ``sys.argv`` is the stage's own
    command line meanwhile, so manifests and resume hints name the command that made each folder.

    Raises:
        RecipeError: the arguments do not parse (an option's value refused by the CLI).
        ShortLLMError: whatever the verb raises.
    """
    ClickException = click_module().ClickException

    cmd = command(stage)
    saved = sys.argv
    sys.argv = ["shortllm", stage, *args]
    try:
        try:
            ctx = cmd.make_context(stage, list(args))
        except ClickException as err:
            raise RecipeError(f"stage {stage}: {err.format_message()}",
                              f"fix the {stage} options of the recipe (see `shortllm {stage} --help`)") from err
        # typer's callback converts the parsed values (older typer releases do it there, not in click); the
        # CLI's error handler lets the verb's errors through to the caller's.
        with ctx, errors_propagate():
            cmd.callback(**ctx.params)
    finally:
        sys.argv = saved


def check_parses(req: RunRequest) -> None:
    """Parse every stage's arguments with the CLI before anything runs (a bad choice fails in a second).

    Raises:
        RecipeError: naming the stage and the CLI's complaint.
    """
    ClickException = click_module().ClickException

    from shortllm.cli import applies

    for stage in req.recipe.stages:
        try:
            ctx = command(stage).make_context(stage, stage_args(req, stage) + ["--out", str(req.out / stage)])
        except ClickException as err:
            raise RecipeError(f"stage {stage}: {err.format_message()}",
                              f"fix the {stage} options of the recipe (see `shortllm {stage} --help`)") from err
        try:
            applies.check_given(ctx, applies.BY_VERB.get(stage, []))  # an option the stage would not read
        except ShortLLMError as err:
            raise RecipeError(f"stage {stage}: {err.message}",
                              f"fix the {stage} options of the recipe (see `shortllm {stage} --help`)") from err


def run_recipe(req: RunRequest, on_stage: StageCallback | None = None) -> RunResult:
    """Run the recipe's stages in order into ``req.out``; write the run manifest and the side-by-side report.

    Returns:
        The :class:`RunResult`; ``finished`` is False when a retrain stopped early (``--stop-after``).

    Raises:
        RecipeError: a bad run folder, arguments the CLI refuses, a stage that wrote no output.
        ShortLLMError: a stage's own failure (its one-line error).
        Interrupted: Ctrl-C or SIGTERM; the message says how to continue.
    """
    on_stage = on_stage or (lambda *_: None)
    run = req.out
    manifest = _read_run_manifest(run)
    check_parses(req)
    if req.recipe.cost:
        on_stage(req.recipe.name, "cost", req.recipe.cost)
    new_run, fresh = not run.exists(), not manifest
    created = make_parents(run)
    run.mkdir(exist_ok=True)
    try:
        return _run_stages(req, run, manifest, on_stage)
    except ShortLLMError as err:
        if fresh and not isinstance(err, Interrupted) and not _any_done(run):  # nothing kept: nothing left
            for item in run.iterdir():  # a new or empty folder before (a non-empty one is refused above)
                shutil.rmtree(item) if item.is_dir() else item.unlink()
            if new_run:
                run.rmdir()
                remove_created(created)
        raise


def _any_done(run: Path) -> bool:
    """Whether a stage of the run folder finished (its record says done)."""
    try:
        stages = json.loads((run / MANIFEST).read_text()).get("stages", {})
    except (OSError, ValueError):
        return False
    return any(record.get("status") == "done" for record in stages.values())


def _run_stages(req: RunRequest, run: Path, manifest: dict[str, Any], on_stage: StageCallback) -> RunResult:
    """The stages of :func:`run_recipe`, in order, into ``run``."""
    from shortllm.pipeline.report import write_report

    records: dict[str, Any] = manifest.get("stages", {})
    manifest = {
        "verb": "run", "created": manifest.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": {"name": req.recipe.name, "path": req.recipe.path, "sha256": req.recipe.sha256,
                   "source": req.recipe.source},
        "model": req.source_model, "data_dir": req.data_dir, "overrides": req.overrides, "command": req.command,
        "stages": records,
    }
    done: dict[str, str] = {}
    finished = True
    for stage in req.recipe.stages:
        args = stage_args(req, stage)
        identity = _identity(req, args)
        folder = run / stage
        record = records.get(stage) or {}
        same = {k: record.get(k) for k in identity} == identity
        if same and record.get("status") == "done" and (folder / MANIFEST).is_file():
            done[stage] = "skipped"
            on_stage(stage, "skip", "up to date (same options and inputs)")
            continue
        extra = ["--out", str(folder)]
        checkpoints = run / f"{stage}.checkpoints"
        if stage == "retrain" and same and record.get("status") == "started" and _has_checkpoints(checkpoints):
            extra.append("--resume")
        if folder.exists() or (stage == "retrain" and checkpoints.exists() and "--resume" not in extra):
            extra.append("--overwrite")  # with --resume: only the old --out is replaced, the checkpoints are kept
        full = args + extra
        cmdline = shlex.join(["shortllm", stage, *full])
        records[stage] = {**identity, "status": "started", "command": cmdline,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(run / MANIFEST, manifest)
        on_stage(stage, "run", cmdline)
        t0 = time.perf_counter()
        before = _stamp(folder / MANIFEST)
        try:
            invoke(stage, full)
        except Interrupted as err:
            raise Interrupted(f"stage {stage}: {err.message}",
                              f"to continue, run `{req.command}` again (finished stages are skipped, an interrupted "
                              "retrain resumes)") from None
        except KeyboardInterrupt:
            raise Interrupted(f"stage {stage} stopped; the stages before it are kept in {run}",
                              f"to continue, run `{req.command}` again") from None
        except ShortLLMError as err:
            err.message = f"stage {stage}: {err.message}"  # the same error, saying which stage failed
            err.args = (err.message,)
            raise
        if _stamp(folder / MANIFEST) in (None, before):  # nothing new written (an older output may remain)
            if stage == "retrain":  # --stop-after: checkpointed, continued by the next run
                done[stage] = "stopped"
                finished = False
                on_stage(stage, "stopped", "stopped before the last step; run the recipe again to continue")
                break
            raise RecipeError(f"stage {stage} wrote nothing to {folder}", "run it alone to see why: " + cmdline)
        records[stage] = {**records[stage], "status": "done", "seconds": round(time.perf_counter() - t0, 1)}
        write_json(run / MANIFEST, manifest)
        done[stage] = "ran"
    report = write_report(req, run)
    manifest["finished"] = finished
    write_json(run / MANIFEST, manifest)
    return RunResult(out=run, stages=done, report=report, finished=finished)


def _stamp(path: Path) -> str | None:
    """The hash of a manifest file (None: none there), to tell a freshly written output from an old one."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _has_checkpoints(root: Path) -> bool:
    from shortllm.training.checkpoints.folders import list_checkpoints

    return bool(list_checkpoints(root))

