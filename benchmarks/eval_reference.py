"""Reference quality numbers: the embedded model and its `prune --ratio 0.2` version, side by side.

WikiText-2 (test) and PTB (validation) perplexity by the paper protocol (128-token windows, BOS only at the
start) and the paper's seven zero-shot tasks through lm-eval, read offline from a data directory in the layout
of docs/eval.md. On a CPU use --limit (the first N perplexity windows and the first N items of each task).

    python benchmarks/eval_reference.py --data-dir ../shared/data --limit 200 --out eval-reference.json
    python benchmarks/eval_reference.py --data-dir ../shared/data --pruned pruned20/   # reuse a pruned folder

Prints a markdown table (paste into docs/eval.md) and writes every number to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from shortllm.evaluation.report import comparison_rows
from shortllm.evaluation.run import EvalRequest, run_eval
from shortllm.evaluation.tasks import PAPER_TASKS
from shortllm.models.loading import LoadSettings


def _pruned(path: Path | None, workdir: Path) -> Path:
    if path is not None:
        return path
    from shortllm.pruning.run import PruneRequest, prune

    out = workdir / "smollm2-135m-pruned20"
    print("pruning the embedded model: --ratio 0.2 (criterion ppl, 10 x 128 tokens of pydoc)", file=sys.stderr)
    prune(PruneRequest(model=None, out=out, ratio=0.2, settings=LoadSettings(device="cpu"),
                       command="shortllm prune --ratio 0.2"))
    return out


def markdown(report: dict) -> str:
    """The side-by-side table as markdown: metric rows, model columns, deltas against the first model."""
    models = report["models"]
    lines = ["| metric | " + " | ".join(m["label"] for m in models) + " |",
             "|---|" + "---:|" * len(models)]
    for row in comparison_rows(models):
        digits = 2 if row.name.startswith("ppl ") else 4
        cells = []
        for i, (v, se, d) in enumerate(zip(row.values, row.stderrs, row.deltas)):
            cell = "-" if v is None else f"{v:.{digits}f}" + (f" ± {se:.3f}" if se is not None else "")
            if i and d is not None:
                cell += f" ({d:+.{digits}f})"
            cells.append(cell)
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="local copies (layout in docs/eval.md)")
    parser.add_argument("--pruned", type=Path, help="an existing `shortllm prune --ratio 0.2` folder")
    parser.add_argument("--limit", type=int, help="first N windows / items per task (CPU: 200)")
    parser.add_argument("--tasks", default=",".join(PAPER_TASKS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="write the full report here (JSON)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        pruned = _pruned(args.pruned, Path(tmp))
        t0 = time.perf_counter()
        report = run_eval(EvalRequest(
            models=["smollm2-135m", str(pruned)], ppl=["wikitext2", "ptb"],
            tasks=[t for t in args.tasks.split(",") if t], limit=args.limit, data_dir=args.data_dir,
            settings=LoadSettings(device=args.device),
            command="python benchmarks/eval_reference.py " + " ".join(sys.argv[1:])))
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    print(markdown(report))
    for m in report["models"]:
        print(f"{m['label']}: " + ", ".join(f"{k} {v:.0f} s" for k, v in m["timings_s"].items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
