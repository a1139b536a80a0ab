"""Benchmark: the embedded SmolLM2-135M against its 20%-pruned copy, measured speedup vs the ideal one.

Prunes the embedded model with ``shortllm prune --ratio 0.2`` (7 of 30 blocks, chosen by the ppl criterion;
``--blocks 21-27`` skips the scoring and removes the same number), then runs ``shortllm bench`` on both, side by side, at
batch 1 and 8, a 64-token prompt and 128 new tokens. Prints one JSON summary (speedup, ideal, efficiency
per batch size; target: decode efficiency >= 0.95 at batch 1) and writes it beside bench.json.

Usage:
    python benchmarks/bench_pruned.py [--device cpu] [--threads N] [--out out-bench-pruned/]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET = 0.95  # measured decode speedup / ideal, at batch 1


def shortllm(*args: str) -> str:
    """Run the shortllm CLI (the one installed beside this Python) and return its stdout."""
    exe = Path(sys.executable).with_name("shortllm")
    cmd = [str(exe) if exe.exists() else "shortllm", *args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--blocks", default=None,
                        help="remove these blocks instead of pruning by --ratio 0.2 (e.g. 21-27: also 7 blocks)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--prompt-len", default="64")
    parser.add_argument("--new-tokens", default="128")
    parser.add_argument("--warmup", default="2")
    parser.add_argument("--repeats", default="5")
    parser.add_argument("--out", type=Path, default=Path("out-bench-pruned"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-pruned-"))
    try:
        pruned = work / "smollm2-135m-pruned"
        how = ["--blocks", args.blocks] if args.blocks else ["--ratio", "0.2"]
        shortllm("prune", *how, "--out", str(pruned), "--device", args.device, "--json")
        bench = ["bench", "-m", "smollm2-135m", "-m", str(pruned), "--batch-sizes", args.batch_sizes,
                 "--prompt-len", args.prompt_len, "--new-tokens", args.new_tokens, "--warmup", args.warmup,
                 "--repeats", args.repeats, "--device", args.device, "--dtype", args.dtype,
                 "--out", str(args.out), "--overwrite", "--json"]
        if args.threads is not None:
            bench += ["--threads", str(args.threads)]
        report = json.loads(shortllm(*bench))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [r for r in report["results"] if r["model"] != "smollm2-135m"]
    summary = {
        "device": report["environment"]["device"],
        "torch_threads": report["environment"]["torch_threads"],
        "load_average": [report["environment"].get("load_average_start"),
                         report["environment"].get("load_average_end")],
        "removed_blocks": args.blocks or "--ratio 0.2 (ppl criterion)",
        "points": [{k: r[k] for k in ("batch_size", "prompt_len", "new_tokens", "ideal_speedup", "speedup",
                                      "efficiency", "latency_speedup", "prefill_speedup")}
                   | {"speedup_range": [r["min"]["speedup"], r["max"]["speedup"]], "trust": r["trust"]}
                   for r in rows],
        "trust": report["trust"],
    }
    batch1 = [r for r in rows if r["batch_size"] == 1]
    if batch1:
        eff = batch1[0]["efficiency"]
        reliable = batch1[0]["trust"]["trusted"]
        summary["target"] = {"efficiency_at_batch_1": eff, "required": TARGET, "reliable": reliable,
                             # a run flagged unreliable proves nothing either way
                             "met": (eff is not None and eff >= TARGET) if reliable else None}
    (args.out / "bench_pruned_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    for p in summary["points"]:
        lo, hi = p["speedup_range"]
        print(f"batch {p['batch_size']:>3}: decode speedup x{p['speedup']:.3f} [x{lo:.3f}..x{hi:.3f}], "
              f"ideal x{p['ideal_speedup']:.3f}, "
              f"efficiency {p['efficiency']:.1%}; end-to-end x{p['latency_speedup']:.3f}"
              + ("" if p["trust"]["trusted"] else " UNRELIABLE"), file=sys.stderr)


if __name__ == "__main__":
    main()
