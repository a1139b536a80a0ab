"""Taylor criterion peak memory: whole-gradient reference vs shortllm's lean reduction, separate processes.

Each variant runs in a fresh Python process (so peak RSS is its own) and reports ru_maxrss after loading
the model (baseline) and after scoring; the script compares the peaks and checks the scores agree.

    python benchmarks/taylor_memory.py --out benchmarks/results/taylor_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(variant: str, samples: int, seq_len: int) -> None:
    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.scoring.run import Calibration, calibration_ids
    from shortllm.scoring.weights import taylor_scores

    loaded = load_model(None, LoadSettings(device="cpu"))
    ids, _ = calibration_ids(loaded, Calibration(samples=samples, seq_len=seq_len))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    scores = taylor_scores(loaded.model, ids, lean=(variant == "lean"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": variant, "baseline_rss": base, "peak_rss": peak, "scores": scores}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--child", choices=["whole", "lean"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.samples, args.seq_len)
        return
    from _common import emit, machine

    runs = {}
    for variant in ("whole", "lean"):
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--samples", str(args.samples),
                               "--seq-len", str(args.seq_len)], capture_output=True, text=True, check=True)
        runs[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    whole, lean = runs["whole"], runs["lean"]
    rel = max(abs(a - b) / abs(b) for a, b in zip(lean["scores"], whole["scores"]))
    emit({
        "benchmark": "taylor_memory",
        "samples": args.samples, "seq_len": args.seq_len,
        "whole_peak_rss_mb": round(whole["peak_rss"] / 2**20, 1),
        "lean_peak_rss_mb": round(lean["peak_rss"] / 2**20, 1),
        "peak_ratio": round(lean["peak_rss"] / whole["peak_rss"], 3),
        "whole_growth_mb": round((whole["peak_rss"] - whole["baseline_rss"]) / 2**20, 1),
        "lean_growth_mb": round((lean["peak_rss"] - lean["baseline_rss"]) / 2**20, 1),
        "max_relative_score_difference": rel,
        "scores_equal_1e-4": rel <= 1e-4,
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
