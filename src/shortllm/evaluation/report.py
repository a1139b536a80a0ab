"""The side-by-side report: model labels from manifests, metric rows with deltas against the first model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortllm.pruning.export import MANIFEST
from shortllm.wording import plural


def label_from_manifest(path: str | Path) -> str | None:
    """A short label from a shortllm output folder's ``shortllm.json``, e.g. ``"ppl, -7 blocks, 18.4%"``.

    Pruned folders give the criterion (or "by hand"), the blocks removed and the parameter ratio achieved;
    retrained folders give their method. None when there is no readable manifest.
    """
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    results = manifest.get("results") or {}
    if not isinstance(results, dict):
        return None
    verb = manifest.get("verb")
    if verb == "prune":
        removed = results.get("removed_original") or results.get("removed") or []
        scores = results.get("scores") or {}
        how = scores.get("criterion") if isinstance(scores, dict) and scores.get("criterion") else "by hand"
        ratio = results.get("achieved_ratio")
        share = f", {ratio:.1%}" if isinstance(ratio, (int, float)) else ""
        return f"{how}, -{plural(len(removed), 'block')}{share}"
    if verb == "retrain":
        options = manifest.get("options") or {}
        method = options.get("method") if isinstance(options, dict) else None
        return f"retrained ({method})" if method else "retrained"
    return verb


def model_label(spec: str | None, kind: str, path: str) -> str:
    """Column label: the spec (or folder name) plus the manifest's summary when there is one."""
    name = spec or "smollm2-135m"
    if kind == "dir":
        name = Path(path).name or name
        summary = label_from_manifest(path)
        return f"{name} ({summary})" if summary else name
    return name


@dataclass
class Row:
    """One metric across models: values (None = not measured) and deltas against the first model."""

    name: str
    values: list[float | None]
    stderrs: list[float | None]
    higher_is_better: bool

    @property
    def deltas(self) -> list[float | None]:
        base = self.values[0]
        return [None if base is None or v is None else v - base for v in self.values]


def task_average(tasks: dict[str, dict[str, Any]]) -> float | None:
    """The plain mean of the tasks' headline values (the paper's "average"); None with no task."""
    values = [t["value"] for t in tasks.values() if t.get("value") is not None]
    return sum(values) / len(values) if values else None


def comparison_rows(models: list[dict[str, Any]]) -> list[Row]:
    """Rows of the side-by-side table: each perplexity, each task's headline metric, then the average."""
    rows: list[Row] = []
    ppl_names = list(dict.fromkeys(k for m in models for k in m.get("ppl", {})))
    for name in ppl_names:
        rows.append(Row(f"ppl {name}", [m.get("ppl", {}).get(name) for m in models], [None] * len(models), False))
    task_names = list(dict.fromkeys(k for m in models for k in m.get("tasks", {})))
    for name in task_names:
        cells = [m.get("tasks", {}).get(name, {}) for m in models]
        metric = next((c.get("metric") for c in cells if c.get("metric")), "?")
        rows.append(Row(f"{name} ({metric})", [c.get("value") for c in cells], [c.get("stderr") for c in cells],
                        True))
    if task_names:
        rows.append(Row("average", [m.get("average") for m in models], [None] * len(models), True))
    return rows


__all__ = ["Row", "comparison_rows", "label_from_manifest", "model_label", "task_average"]
