"""The lm-eval bridge: zero-shot tasks on the model already in memory (``simple_evaluate`` + ``HFLM``).

Without a data directory lm-eval's own task definitions are used (they download their datasets). With one,
shortllm's own definitions (``evaluation/tasks/*.yaml``) replace them for the seven tasks of the paper and read
the local files; any other task name still goes to lm-eval. ``--include-path`` adds user task folders last, so
a user's YAML wins over both.

lm-eval's tasks download their data when they are built: that runs inside :func:`shortllm.data.offline.hub_access`,
and without a network it ends in one line naming the fix (``--data-dir`` for the paper's tasks, or a run online
that fills the datasets cache). Offline, the tasks are built once while planning, so that a missing copy is found
before any model is loaded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from shortllm.data.offline import hub_access, is_network_error
from shortllm.errors import DataError, reason
from shortllm.evaluation.tasks import OFFLINE_TASKS, PAPER_METRIC, PAPER_TASKS, TASKS_DIR, check_offline_task
from shortllm.evaluation.tasks.utils import DATA_DIR_KEY

log = logging.getLogger(__name__)

# For tasks outside the paper's seven: the first of these that the task reports is its headline metric.
METRIC_PREFERENCE = ("acc", "acc_norm", "exact_match", "f1", "mcc", "word_perplexity")


@dataclass
class TaskPlan:
    """Checked task names and where each one's definition comes from."""

    names: list[str]
    offline: list[str]  # names answered by shortllm's offline YAML (data directory given)
    data_dir: Path | None
    include_paths: list[Path] = field(default_factory=list)
    manager: Any = None  # lm_eval TaskManager, built once and shared by every model

    def source(self, name: str) -> str:
        return f"shortllm offline ({self.data_dir})" if name in self.offline else "lm-eval"


def parse_tasks(spec: str | None) -> list[str]:
    """``"piqa,arc_easy"`` -> names; ``None`` -> the paper's seven; ``""``/``none`` -> no tasks."""
    if spec is None:
        return list(PAPER_TASKS)
    if spec.strip().lower() in ("", "none"):
        return []
    names = [t.strip() for t in spec.split(",") if t.strip()]
    return list(dict.fromkeys(names))


def unknown_task_error(names: list[str]) -> DataError:
    """The one-line error of task names that neither lm-eval nor shortllm (nor --include-path) defines."""
    return DataError(
        f"unknown task {', '.join(repr(n) for n in names)} (the paper's: {', '.join(PAPER_TASKS)}; "
        "or any lm-eval task: `lm-eval ls tasks`)",
        "check the spelling, or pass --include-path for your own task YAML",
    )


def _lm_eval_tasks_dir() -> Path | None:
    spec = importlib.util.find_spec("lm_eval")  # finds the package without importing it (that takes seconds)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


def check_task_names(names: list[str], data_dir: Path | None, include_paths: list[Path] | None = None) -> list[Path]:
    """Refuse, before lm-eval is imported, task names that no task YAML mentions at all.

    Every lm-eval task, group and tag name is written in some YAML file (``task:``, ``group:``, ``tag:``), so a
    name found in no file's text is certainly unknown. Reading the text of lm-eval 0.4.13's 13,986 task files
    took 1.5 s on a busy 2-core machine, where importing lm-eval took 5 s and building its index of 14,683 names
    39 s; that index (:func:`plan_tasks`) then only judges names that do appear somewhere.

    Returns:
        the include paths, user-expanded.

    Raises:
        DataError: an include path that is not a directory; a name that no task file mentions.
    """
    include_paths = [Path(p).expanduser() for p in include_paths or []]
    for p in include_paths:
        if not p.is_dir():
            raise DataError(f"--include-path {p} is not a directory", "give a folder of lm-eval task YAML files")
    offline = {n for n in names if data_dir is not None and n in OFFLINE_TASKS}
    missing = {n: n.encode() for n in names if n not in offline}
    lm_eval_tasks = _lm_eval_tasks_dir()
    if not missing or lm_eval_tasks is None or not lm_eval_tasks.is_dir():  # no lm-eval: importing it says so
        return include_paths
    for root in [*include_paths, TASKS_DIR, lm_eval_tasks]:
        for folder, _, files in os.walk(root):
            for file in (f for f in files if f.endswith((".yaml", ".yml"))):
                try:
                    text = (Path(folder) / file).read_bytes()
                except OSError:
                    continue
                missing = {n: b for n, b in missing.items() if b not in text}
                if not missing:
                    return include_paths
    raise unknown_task_error(list(missing))


def plan_tasks(names: list[str], data_dir: Path | None, include_paths: list[Path] | None = None) -> TaskPlan:
    """Check task names and files before any model is loaded, and build the shared TaskManager.

    lm-eval's own task index (14,683 names; 39 s to build on a busy 2-core machine) is only built when some task is
    not answered by the offline definitions, and only after :func:`check_task_names` found every name in some file.

    Raises:
        DataError: an unknown task (the paper's seven are listed), a missing include path, a missing or
            malformed task file in the data directory; offline, a task whose data is not in the datasets cache.
    """
    include_paths = check_task_names(names, data_dir, include_paths)
    offline = [n for n in names if data_dir is not None and n in OFFLINE_TASKS]
    for name in offline:
        check_offline_task(name, data_dir)
    plan = TaskPlan(names, offline, data_dir, include_paths)
    if not names:
        return plan
    from lm_eval.tasks import TaskManager

    paths = ([TASKS_DIR] if data_dir is not None else []) + include_paths
    need_defaults = any(n not in offline for n in names)
    with _own_overrides_unlogged():
        plan.manager = TaskManager(include_path=[str(p) for p in paths] or None, include_defaults=need_defaults,
                                   metadata={DATA_DIR_KEY: str(data_dir)} if data_dir is not None else None)
    unknown = [n for n in names if n not in plan.manager.all_tasks]
    if unknown:
        raise unknown_task_error(unknown)
    downloaded = [n for n in names if n not in offline]
    if downloaded:
        with hub_access() as reachable:
            if not reachable:  # find out now, before any model loads, whether the datasets cache holds them
                for name in downloaded:
                    try:
                        plan.manager.load_task_or_group([name])
                    except Exception as err:
                        raise task_data_error([name], data_dir, err) from err
    return plan


def task_data_error(names: list[str], data_dir: Path | None, err: Exception) -> DataError:
    """The one-line error of lm-eval tasks whose data could not be loaded: offline, it names the fixes.

    Args:
        names: the tasks that were being built.
        data_dir: the data directory given (``--data-dir``), or None.
        err: what lm-eval (or ``datasets`` underneath) raised.
    """
    listed = ", ".join(names)
    first = reason(err, 200)
    if not is_network_error(err):
        return DataError(f"cannot build the lm-eval task {listed}: {first}",
                         "check the task's YAML (--include-path), or run with SHORTLLM_DEBUG=1 for the traceback")
    local = [n for n in names if n in OFFLINE_TASKS]
    cache = "run once online so that the datasets cache holds them"
    if local and data_dir is None:
        hint = f"pass --data-dir with local copies of the task files (layout in docs/eval.md), or {cache}"
    else:  # tasks shortllm has no offline definition of (or a data directory that did not cover them)
        hint = (f"{cache}, or give task YAML that reads local files with --include-path (the paper's seven tasks "
                "read local copies with --data-dir)")
    return DataError(f"cannot load the data of the lm-eval task {listed}: the Hugging Face hub cannot be reached "
                     "(offline) and the datasets cache holds no copy", hint)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not math.isnan(float(value)) else None


def summarise(name: str, raw: dict[str, Any], n_samples: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """One task's lm-eval result row -> ``{metric, value, stderr, metrics, stderrs, samples, source}``.

    ``metric`` is the paper's for its seven tasks, else the first of :data:`METRIC_PREFERENCE` reported.
    """
    metrics: dict[str, float | None] = {}
    stderrs: dict[str, float | None] = {}
    for key, value in raw.items():
        metric, _, filt = key.partition(",")
        if key == "alias" or not filt:
            continue
        label = metric if filt == "none" else f"{metric},{filt}"
        if metric.endswith("_stderr"):
            stderrs[label.replace("_stderr", "", 1)] = _number(value)
        else:
            metrics[label] = _number(value)
    headline = PAPER_METRIC.get(name) if PAPER_METRIC.get(name) in metrics else next(
        (m for m in METRIC_PREFERENCE if m in metrics), next(iter(metrics), None))
    return {"metric": headline, "value": metrics.get(headline), "stderr": stderrs.get(headline),
            "metrics": metrics, "stderrs": stderrs,
            "samples": (n_samples or {}).get("effective"), "source": source}


class _OwnOverrides(logging.Filter):
    """Drops lm-eval's warning that a task of shortllm's offline set replaces lm-eval's own: that is the design."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        own = len(args) >= 2 and Path(str(args[1])).resolve().parent == TASKS_DIR.resolve()
        return not (own and "overrides existing task" in str(record.msg))


@contextlib.contextmanager
def _own_overrides_unlogged():
    logger, drop = logging.getLogger("lm_eval.tasks._index"), _OwnOverrides()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def bars_disabled() -> bool:
    """Whether progress bars are off (``TQDM_DISABLE``, which the CLI sets unless -v): lm-eval's included."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def _lm(model: Any, tokenizer: Any, batch_size: int, add_bos: bool | None = None) -> Any:
    """lm-eval's HFLM on the in-memory model; its request loops show bars only when :func:`bars_disabled` is False.

    lm-eval passes ``disable=`` to those bars itself, so ``TQDM_DISABLE`` alone does not reach them.
    ``add_bos`` is HFLM's ``add_bos_token``: True/False encode task inputs with/without the tokenizer's special
    tokens, None leaves the tokenizer's default (lm-eval 0.4's: BOS where the tokenizer adds one).
    """
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or bars_disabled())

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or bars_disabled())

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or bars_disabled())

    return QuietHFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                     add_bos_token=add_bos)


def run_tasks(model: Any, tokenizer: Any, plan: TaskPlan, limit: int | None = None, batch_size: int = 8,
              num_fewshot: int = 0, seed: int = 1234, add_bos: bool | None = None) -> dict[str, dict[str, Any]]:
    """Evaluate ``plan.names`` on an in-memory model with lm-eval's ``simple_evaluate``.

    Args:
        limit: the first N examples of each task.
        batch_size: requests per forward pass.
        num_fewshot: examples in each prompt (0 = zero-shot, the paper's setting).
        seed: lm-eval's random, numpy, torch and few-shot seeds.
        add_bos: BOS on task inputs (HFLM ``add_bos_token``): None = the tokenizer's default, as lm-eval 0.4;
            False = none, as the Shortened LLaMA numbers were produced.

    Returns:
        ``{task: summarise(...)}`` for every requested name (groups report their aggregate).

    Raises:
        DataError: the model has no tokenizer; a task's data cannot be downloaded (no network).
    """
    if not plan.names:
        return {}
    if tokenizer is None:
        raise DataError("the model has no tokenizer, so lm-eval tasks cannot be run", "save a tokenizer with it")
    from lm_eval import simple_evaluate

    import lm_eval.evaluator

    lm = _lm(model, tokenizer, batch_size, add_bos)
    # simple_evaluate records `git describe` of the current directory, and git prints "fatal: not a git
    # repository" on the user's terminal outside one; that hash means nothing for shortllm's report.
    downloaded = [n for n in plan.names if n not in plan.offline]
    hub = hub_access() if downloaded else contextlib.nullcontext()
    with mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None), hub:
        try:
            results = simple_evaluate(
                model=lm, tasks=list(plan.names), num_fewshot=num_fewshot, limit=limit, task_manager=plan.manager,
                log_samples=False, bootstrap_iters=1000, random_seed=seed, numpy_random_seed=seed,
                torch_random_seed=seed, fewshot_random_seed=seed,
                # The prompt format is ours to decide, not a release's: plain zero-shot text, as in the papers.
                apply_chat_template=False, fewshot_as_multiturn=False, system_instruction=None,
            )
        except Exception as err:  # a task's data download (or a metric's) that found no network
            if not is_network_error(err):
                raise
            raise task_data_error(downloaded, plan.data_dir, err) from err
    table = {**results.get("groups", {}), **results["results"]}
    n_samples = results.get("n-samples", {})
    return {name: summarise(name, table.get(name, {}), n_samples.get(name), plan.source(name))
            for name in plan.names}


__all__ = ["TaskPlan", "bars_disabled", "check_task_names", "parse_tasks", "plan_tasks", "run_tasks", "summarise",
           "task_data_error", "unknown_task_error"]
