"""Layer-by-layer (``--offload``) vs in-memory scoring, alternating in one process on the same windows.

In memory, ``ppl`` caches every block's input in one pass, then for each candidate runs the tail i+1..n-1
from the cache (one tail per candidate, one model in memory). Layer by layer, one sweep reads each block
once from the safetensors files and runs it on the full-model stream and on every live candidate stream
("block c removed"), candidates batched together; the head runs once per candidate. Both do the same block
applications (n(n-1)/2 tails' worth); the sweep batches them into fewer, larger calls and pays a weight read
per block and a dry run of the embeddings per call.

    python benchmarks/offload_scoring.py --out benchmarks/results/offload_scoring.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from shortllm.models.loading import LoadSettings, load_model  # noqa: E402
from shortllm.scoring.base import ScoreContext  # noqa: E402
from shortllm.scoring.registry import get_criterion  # noqa: E402
from shortllm.scoring.run import Calibration, calibration_ids  # noqa: E402
from shortllm.scoring.sweep import open_stream  # noqa: E402
from shortllm.scoring.sweep_criteria import run_layerwise  # noqa: E402


def order(scores):
    known = [i for i, s in enumerate(scores) if s is not None]
    return sorted(known, key=lambda i: (scores[i], i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded smollm2-135m)")
    parser.add_argument("--criteria", default="ppl", help="comma-separated, e.g. ppl,bi,taylor")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="alternating (in-memory, layer-by-layer) pairs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    settings = LoadSettings(device="cpu")
    t = time.perf_counter()
    loaded = load_model(args.model, settings)
    load_in_memory = time.perf_counter() - t
    t = time.perf_counter()
    skeleton, stream = open_stream(args.model, settings)
    load_offload = time.perf_counter() - t
    ids, calibration = calibration_ids(loaded, Calibration(samples=args.samples, seq_len=args.seq_len))
    n = len(stream.blocks.layers)
    results = {}
    for name in args.criteria.split(","):
        criterion = get_criterion(name)
        times = {"in_memory": [], "layer_by_layer": []}
        scores = {}
        for _ in range(args.repeats):
            for mode, model, run in (("in_memory", loaded.model, criterion.run),
                                     ("layer_by_layer", skeleton.model,
                                      lambda ctx: run_layerwise(stream, criterion, ctx))):
                ctx = ScoreContext(model=model, input_ids=ids, num_remove=max(1, n // 5),
                                   candidates=list(range(n)))
                t = time.perf_counter()
                scores[mode] = run(ctx).scores
                times[mode].append(time.perf_counter() - t)
        pairs = [(a, b) for a, b in zip(scores["in_memory"], scores["layer_by_layer"]) if a is not None]
        medians = {mode: statistics.median(ts) for mode, ts in times.items()}
        results[name] = {
            **{f"{mode}_s": [round(x, 2) for x in ts] for mode, ts in times.items()},
            **{f"{mode}_median_s": round(m, 2) for mode, m in medians.items()},
            "faster": min(medians, key=medians.get),
            "layer_by_layer_over_in_memory": round(medians["layer_by_layer"] / medians["in_memory"], 3),
            "max_relative_difference": max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs),
            "identical_order": order(scores["in_memory"]) == order(scores["layer_by_layer"]),
        }
    emit({
        "benchmark": "offload_scoring",
        "model": loaded.source.spec,
        "num_blocks": n,
        "calibration": {"samples": args.samples, "seq_len": args.seq_len, "fingerprint": calibration["fingerprint"]},
        "load_s": {"in_memory": round(load_in_memory, 2), "layer_by_layer_skeleton": round(load_offload, 2)},
        "criteria": results,
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
