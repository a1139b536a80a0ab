"""The run's side-by-side report: every model the run made (original, pruned, healed) with its numbers.

``report.json`` holds, per model: where it is, parameters, blocks, perplexities, task accuracies (and their
average) and the bench points, each taken from the stage manifests (``shortllm.json``, ``eval``'s and ``bench``'s
results); ``report.md`` is the same as one Markdown table, metrics down, models across. A number a stage did not
measure is absent (``-`` in the table), never guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shortllm.pipeline.stages import MANIFEST, RunRequest, stage_args, write_json


def _manifest(run: Path, stage: str) -> dict[str, Any] | None:
    path = run / stage / MANIFEST
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def _models(req: RunRequest, run: Path) -> list[dict[str, Any]]:
    """The models of the run, in the order eval and bench compare them."""
    prune = (_manifest(run, "prune") or {}).get("results") or {}
    retrain = (_manifest(run, "retrain") or {}).get("results") or {}
    original = {"name": "original", "model": req.source_model or "smollm2-135m",
                "params": prune.get("params_before"), "blocks": prune.get("num_blocks_before")}
    models = [original]
    if "prune" in req.recipe.stages:
        models.append({"name": "pruned", "model": str(run / "prune"), "params": prune.get("params_after"),
                       "blocks": prune.get("num_blocks_after"), "removed_blocks": prune.get("removed_original"),
                       "removed_ratio": prune.get("achieved_ratio")})
    if "retrain" in req.recipe.stages:
        best = retrain.get("best") or {}
        models.append({"name": "healed", "model": str(run / "retrain"), "params": prune.get("params_after"),
                       "blocks": prune.get("num_blocks_after"), "removed_blocks": prune.get("removed_original"),
                       "method": retrain.get("method"),
                       "steps": retrain.get("steps"), "tokens": retrain.get("tokens_seen"),
                       "held_out_loss_before": retrain.get("initial_eval_loss"),
                       "held_out_loss_after": best.get("eval_loss", retrain.get("final_eval_loss")),
                       "best_step": best.get("step")})
        if "prune" not in req.recipe.stages:
            models[-1]["params"] = retrain.get("params")
    return models


def _match(models: list[dict[str, Any]], entries: list[dict[str, Any]], specs: list[str]) -> list[list[dict]]:
    """The entries (eval models, bench rows) of each model: by the spec the stage was given, in order."""
    out: list[list[dict]] = [[] for _ in models]
    for entry in entries:
        spec = entry.get("model")
        if spec in specs and specs.index(spec) < len(models):
            out[specs.index(spec)].append(entry)
    return out


def _stage_models(req: RunRequest, stage: str) -> list[str]:
    args = stage_args(req, stage)
    return [v for flag, v in zip(args, args[1:]) if flag == "--model"]


def build_report(req: RunRequest, run: Path) -> dict[str, Any]:
    """The side-by-side numbers of the run folder ``run`` (stages not run yet are left out)."""
    models = _models(req, run)
    ev = (_manifest(run, "eval") or {}).get("results") or {}
    if ev and "eval" in req.recipe.stages:
        for model, found in zip(models, _match(models, ev.get("models", []), _stage_models(req, "eval"))):
            if found:
                m = found[0]
                model["ppl"] = m.get("ppl") or {}
                model["tasks"] = {k: v.get("value") for k, v in (m.get("tasks") or {}).items()}
                model["task_average"] = m.get("average")
    bench = (_manifest(run, "bench") or {}).get("results") or {}
    if bench and "bench" in req.recipe.stages:
        for model, rows in zip(models, _match(models, bench.get("results", []), _stage_models(req, "bench"))):
            model["bench"] = [{k: r.get(k) for k in ("batch_size", "prompt_len", "new_tokens", "decode_tokens_per_s",
                                                     "latency_s", "speedup", "peak_memory_bytes")}
                              | {"trusted": (r.get("trust") or {}).get("trusted")} for r in rows]
    return {"recipe": req.recipe.name, "source": req.recipe.source, "run": str(run),
            "eval_settings": {k: ev.get("settings", {}).get(k) for k in ("protocol", "seq_len", "limit")} if ev
            else None, "models": models}


def _cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: one table, metrics down, models across."""
    models = report["models"]
    rows: list[tuple[str, list[str]]] = [
        ("model", [m["model"] for m in models]),
        ("parameters", [_cell(m.get("params")) for m in models]),
        ("blocks", [_cell(m.get("blocks")) for m in models]),
    ]
    if any(m.get("removed_blocks") for m in models):
        rows.append(("removed blocks", [",".join(map(str, m.get("removed_blocks") or [])) or "-" for m in models]))
    if any(m.get("method") for m in models):
        rows.append(("healing", [f"{m['method']}, {m.get('steps')} steps" if m.get("method") else "-"
                                 for m in models]))
        rows.append(("held-out loss (kept weights)", [
            f"{_cell(m.get('held_out_loss_before'), 4)} -> {_cell(m.get('held_out_loss_after'), 4)}"
            + (f" (best: step {m['best_step']})" if m.get("best_step") else "") if m.get("method") else "-"
            for m in models]))
    for name in dict.fromkeys(k for m in models for k in m.get("ppl") or {}):
        rows.append((f"ppl {name}", [_cell((m.get("ppl") or {}).get(name)) for m in models]))
    for name in dict.fromkeys(k for m in models for k in m.get("tasks") or {}):
        rows.append((f"{name} acc", [_cell((m.get("tasks") or {}).get(name), 4) for m in models]))
    if any(m.get("task_average") is not None for m in models):
        rows.append(("task average", [_cell(m.get("task_average"), 4) for m in models]))
    points = list(dict.fromkeys((b["batch_size"], b["prompt_len"], b["new_tokens"])
                                for m in models for b in m.get("bench") or []))
    for point in points:
        cells, speed = [], []
        for m in models:
            b = next((b for b in m.get("bench") or [] if (b["batch_size"], b["prompt_len"], b["new_tokens"]) == point),
                     None)
            cells.append(_cell(b and b.get("decode_tokens_per_s"), 1) + ("" if not b or b.get("trusted") else " (!)"))
            speed.append(_cell(b and b.get("speedup")))
        rows.append((f"decode tok/s (batch {point[0]}, prompt {point[1]}, {point[2]} new)", cells))
        rows.append((f"decode speedup (batch {point[0]})", speed))
    lines = [f"# shortllm run: {report['recipe']}", ""]
    if report.get("source"):
        lines += [f"- {k}: {v}" for k, v in report["source"].items()] + [""]
    header = ["metric"] + [m["name"] for m in models]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows]
    settings = report.get("eval_settings")
    if settings:
        limit = f", first {settings['limit']} windows/examples" if settings.get("limit") else ""
        lines += ["", f"Perplexity: {settings['protocol']} protocol, {settings['seq_len']}-token windows{limit}."]
    if points:
        lines.append("(!) marks a bench point its own trust checks call unreliable (see bench/bench.json).")
    return "\n".join(lines) + "\n"


def write_report(req: RunRequest, run: Path) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into the run folder; returns the report."""
    report = build_report(req, run)
    write_json(run / "report.json", report)
    (run / "report.md").write_text(render_markdown(report))
    return report
