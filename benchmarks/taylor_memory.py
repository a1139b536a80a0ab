"""Taylor criterion peak memory: whole-gradient reference vs shortllm's lean reduction, separate processes.

Each variant runs in a fresh Python process. Once the model is loaded and paged in (baseline: Python, torch
and the weights, identical in both), a thread samples the live RSS every 2 ms while scoring runs. The target
compares the memory scoring adds (peak - baseline); total peaks are reported too. Scores must agree.
(Linux: reads /proc/self/statm; children run with MALLOC_MMAP_THRESHOLD_=65536 so freed memory leaves RSS.)

    python benchmarks/taylor_memory.py --out benchmarks/results/taylor_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def child(variant: str, samples: int, seq_len: int) -> None:
    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.scoring.run import Calibration, calibration_ids
    from shortllm.scoring.weights import taylor_scores

    loaded = load_model(None, LoadSettings(device="cpu"))
    ids, _ = calibration_ids(loaded, Calibration(samples=samples, seq_len=seq_len))
    import torch

    with torch.no_grad():  # page every weight in with a tiny forward, so the baseline holds the model
        loaded.model(ids[:1, :8], use_cache=False)
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sample():  # ru_maxrss would include the load's transient peak; sample the live RSS instead
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    scores = taylor_scores(loaded.model, ids, lean=(variant == "lean"))
    done.set()
    thread.join()
    peak = max(peak[0], _rss())
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
        # A fixed mmap threshold makes glibc return large freed blocks to the OS at once, so RSS follows the
        # live memory instead of whatever the allocator kept from earlier (same setting for both variants).
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run([sys.executable, __file__, "--child", variant, "--samples", str(args.samples),
                               "--seq-len", str(args.seq_len)], capture_output=True, text=True, check=True, env=env)
        runs[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    whole, lean = runs["whole"], runs["lean"]
    rel = max(abs(a - b) / abs(b) for a, b in zip(lean["scores"], whole["scores"]))
    emit({
        "benchmark": "taylor_memory",
        "samples": args.samples, "seq_len": args.seq_len,
        "whole_peak_rss_mb": round(whole["peak_rss"] / 2**20, 1),
        "lean_peak_rss_mb": round(lean["peak_rss"] / 2**20, 1),
        "peak_ratio": round(lean["peak_rss"] / whole["peak_rss"], 3),
        "growth_ratio": round((lean["peak_rss"] - lean["baseline_rss"]) / (whole["peak_rss"] - whole["baseline_rss"]), 3),
        "whole_growth_mb": round((whole["peak_rss"] - whole["baseline_rss"]) / 2**20, 1),
        "lean_growth_mb": round((lean["peak_rss"] - lean["baseline_rss"]) / 2**20, 1),
        "max_relative_score_difference": rel,
        "scores_equal_1e-4": rel <= 1e-4,
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
