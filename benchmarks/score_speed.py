"""PPL criterion: the reference approach vs `shortllm score --criterion ppl`, alternating in one process.

The reference (as the Shortened-LLaMA release does it): for every block, build a copy of the model
without that block, then run the calibration samples one at a time. Ours: one batched pass caches each
block's input; "block i removed" runs only blocks i+1.. from the cache (shortllm.scoring.perplexity).

    python benchmarks/score_speed.py --repeats 1 --out benchmarks/results/score_speed.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from shortllm.models.arch import blocks_of  # noqa: E402
from shortllm.models.loading import LoadSettings, load_model  # noqa: E402
from shortllm.models.surgery import drop_blocks  # noqa: E402
from shortllm.scoring.base import ScoreContext  # noqa: E402
from shortllm.scoring.registry import get_criterion  # noqa: E402
from shortllm.scoring.perplexity import nll_sum, perplexity  # noqa: E402
from shortllm.scoring.run import Calibration, calibration_ids  # noqa: E402


def reference_ppl_scores(model, ids) -> list[float]:
    """Per block: copy the model without it, then score the samples one by one (batch 1)."""
    scores = []
    for i in range(len(blocks_of(model).layers)):
        pruned = copy.deepcopy(model)
        drop_blocks(pruned, [i])
        total, count = 0.0, 0
        with torch.no_grad():
            for row in ids:
                nll, n = nll_sum(pruned(row[None], use_cache=False).logits, row[None])
                total, count = total + nll, count + n
        scores.append(perplexity(total, count))
        del pruned
    return scores


def ours(model, ids) -> list[float]:
    n = len(blocks_of(model).layers)
    ctx = ScoreContext(model=model, input_ids=ids, num_remove=1, candidates=list(range(n)))
    return get_criterion("ppl").run(ctx).scores


def order(scores):
    return sorted(range(len(scores)), key=lambda i: (scores[i], i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model spec (default: the embedded smollm2-135m)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="alternating (reference, ours) pairs")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    loaded = load_model(args.model, LoadSettings(device="cpu"))
    ids, calibration = calibration_ids(loaded, Calibration(samples=args.samples, seq_len=args.seq_len))
    ref_times, our_times, ref_scores, our_scores = [], [], None, None
    for _ in range(args.repeats):
        t = time.perf_counter()
        ref_scores = reference_ppl_scores(loaded.model, ids)
        ref_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        our_scores = ours(loaded.model, ids)
        our_times.append(time.perf_counter() - t)
    rel = max(abs(a - b) / b for a, b in zip(our_scores, ref_scores))
    emit({
        "benchmark": "score_speed",
        "model": loaded.source.spec,
        "calibration": {"samples": args.samples, "seq_len": args.seq_len, "fingerprint": calibration["fingerprint"]},
        "reference_s": [round(x, 2) for x in ref_times],
        "ours_s": [round(x, 2) for x in our_times],
        "reference_median_s": round(statistics.median(ref_times), 2),
        "ours_median_s": round(statistics.median(our_times), 2),
        "speedup": round(statistics.median(ref_times) / statistics.median(our_times), 2),
        "identical_order": order(ref_scores) == order(our_scores),
        "max_relative_ppl_difference": rel,
        "order": order(our_scores),
        "machine": machine(),
    }, args.out)


if __name__ == "__main__":
    main()
