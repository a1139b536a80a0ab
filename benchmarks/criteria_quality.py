"""Which criterion to choose: remove 20% of the parameters with each one, then measure WikiText-2 perplexity.

For every registered criterion: score the embedded model on the default calibration (10 x 128 tokens of the
built-in pydoc corpus, seed 1234), remove the blocks `--ratio 0.2` allows (7 of 30), and measure WikiText-2
(raw, test) perplexity with the paper protocol: documents joined with "\\n\\n", tokenized once,
non-overlapping 128-token windows (first `--limit` windows). Needs a local WikiText-2 copy:

    python benchmarks/criteria_quality.py --data-dir ../shared/data --limit 200 \\
        --out benchmarks/results/criteria_quality.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

from shortllm.data import load_documents  # noqa: E402
from shortllm.evaluation.perplexity import perplexity  # noqa: E402
from shortllm.models.loading import LoadSettings, load_model  # noqa: E402
from shortllm.models.surgery import count_params, drop_blocks  # noqa: E402
from shortllm.pruning.plan import blocks_within_ratio  # noqa: E402
from shortllm.scoring.base import criterion_names  # noqa: E402
from shortllm.scoring.run import ScoreOptions, removal_from_report, score_loaded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="local datasets (default: $SHORTLLM_DATA_DIR)")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=200, help="first N 128-token windows of WikiText-2 test")
    parser.add_argument("--criteria", default=",".join(criterion_names()))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    loaded = load_model(None, LoadSettings(device="cpu"))
    wikitext = load_documents("wikitext2", "test", data_dir=args.data_dir)
    counts = count_params(loaded.model)
    k = blocks_within_ratio(counts, args.ratio)

    def ppl_of(model) -> float:
        return perplexity(model, loaded.tokenizer, wikitext, protocol="paper", seq_len=128, limit=args.limit).ppl

    rows = [{"criterion": "none (original)", "removed": [], "wikitext2_ppl": round(ppl_of(loaded.model), 3)}]
    for name in args.criteria.split(","):
        t = time.perf_counter()
        report = score_loaded(loaded, ScoreOptions(criterion=name), k)
        removed = removal_from_report(report, k)
        scoring_s = time.perf_counter() - t
        pruned = copy.deepcopy(loaded.model)
        drop_blocks(pruned, removed)
        rows.append({"criterion": name, "removed": removed, "wikitext2_ppl": round(ppl_of(pruned), 3),
                     "scoring_s": round(scoring_s, 1)})
        print(rows[-1], file=sys.stderr, flush=True)
        del pruned
    emit({"benchmark": "criteria_quality", "model": loaded.source.spec, "ratio": args.ratio, "num_blocks": k,
          "params_removed": sum(counts.per_block[:k]), "achieved_ratio": round(sum(counts.per_block[:k]) / counts.total, 4),
          "protocol": f"paper, 128-token windows, first {args.limit}", "rows": rows, "machine": machine()}, args.out)


if __name__ == "__main__":
    main()
