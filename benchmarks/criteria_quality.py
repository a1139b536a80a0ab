"""Which criterion to choose: remove 20% of the parameters with each one, then measure WikiText-2 perplexity.

For every registered criterion (``auto`` included, and ``auto`` with ``--refine``): score the embedded model on
the default calibration (10 x 128 tokens of the built-in pydoc corpus, seed 1234; ``auto`` also measures its
candidates on 4096 held-out pydoc tokens), remove what ``--ratio 0.2`` allows (7 of 30 blocks; with the same
``fit_within_ratio`` as ``prune``), and measure WikiText-2 (raw, test) perplexity with the paper protocol:
documents joined with "\\n\\n", tokenized once, non-overlapping 128-token windows (first ``--limit``).
With ``--replace linear`` each cut is also measured with ReplaceMe's linear map folded in (fitted on 64 x 128
pydoc tokens, as ``prune --replace linear`` does; ``--replace-samples``, ``--replace-data`` and
``--replace-objective`` change the fit). Needs a local WikiText-2 copy:

    python benchmarks/criteria_quality.py --data-dir ../shared/data --limit 200 --replace none,linear \\
        --out benchmarks/results/criteria_quality.json

Rows are written to ``--out`` as they finish, so a long run that is stopped keeps what it measured.
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
from shortllm.errors import ShortLLMError  # noqa: E402
from shortllm.evaluation.perplexity import perplexity  # noqa: E402
from shortllm.models.loading import LoadSettings, load_model  # noqa: E402
from shortllm.models.params import count_params  # noqa: E402
from shortllm.models.surgery import drop_blocks  # noqa: E402
from shortllm.pruning.plan import blocks_requested, fit_within_ratio  # noqa: E402
from shortllm.pruning.replace import ReplaceContext, ReplaceOptions  # noqa: E402
from shortllm.pruning.replacements import get_replacement  # noqa: E402
from shortllm.scoring.registry import criterion_names  # noqa: E402
from shortllm.scoring.run import Calibration, ScoreOptions, calibration_ids, removal_from_report  # noqa: E402
from shortllm.scoring.run import score_loaded  # noqa: E402
from shortllm.scoring.search import SearchOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="local datasets (default: $SHORTLLM_DATA_DIR)")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=200, help="first N 128-token windows of WikiText-2 test")
    parser.add_argument("--criteria", default=",".join(["auto", *criterion_names()]),
                        help="comma list; auto rows come first (auto, then auto --refine N)")
    parser.add_argument("--refine", type=int, default=3, help="the 'auto --refine N' row (0: none)")
    parser.add_argument("--replace", default="none", help="comma list of none and/or replacement methods")
    parser.add_argument("--replace-for", default=None,
                        help="comma list of rows that also get --replace (default: every row)")
    parser.add_argument("--replace-samples", type=int, default=64)
    parser.add_argument("--replace-objective", default="token", choices=["token", "mse"],
                        help="token (default) | mse (the paper's)")
    parser.add_argument("--replace-data", default="pydoc", help="calibration corpus of the replacement fit")
    parser.add_argument("--no-original", action="store_true", help="skip the original model's row")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    loaded = load_model(None, LoadSettings(device="cpu"))
    wikitext = load_documents("wikitext2", "test", data_dir=args.data_dir)
    counts = count_params(loaded.model)
    k = blocks_requested(counts, args.ratio)
    replaces = [r for r in args.replace.split(",") if r]
    replace_for = set(args.replace_for.split(",")) if args.replace_for else None
    fit_ids = None
    measured: dict[tuple, float] = {}  # (removed, method) -> ppl: a set proposed twice is measured once

    def ppl_of(model) -> float:
        return perplexity(model, loaded.tokenizer, wikitext, protocol="paper", seq_len=128, limit=args.limit).ppl

    result = {"benchmark": "criteria_quality", "model": loaded.source.spec, "ratio": args.ratio, "max_blocks": k,
              "protocol": f"paper, 128-token windows, first {args.limit}", "rows": [], "machine": machine()}

    def measure(label: str, removed: list[int], info: dict) -> None:
        for method in replaces:
            if method != "none" and replace_for is not None and label not in replace_for:
                continue
            row = {"criterion": label, "replace": None if method == "none" else method, "removed": removed,
                   "replace_fit": None if method == "none" else {
                       "samples": args.replace_samples, "data": args.replace_data, "objective": args.replace_objective},
                   "achieved_ratio": round(sum(counts.per_block[i] for i in removed) / counts.total, 4), **info}
            key = (tuple(removed), method)
            if key in measured:
                row["wikitext2_ppl"], row["same_set_as"] = measured[key]
            else:
                pruned = copy.deepcopy(loaded.model)
                if method != "none":
                    nonlocal fit_ids
                    if fit_ids is None:
                        fit_ids, _ = calibration_ids(loaded, Calibration(
                            data=args.replace_data, data_dir=args.data_dir, samples=args.replace_samples))
                    t = time.perf_counter()
                    try:
                        record = get_replacement(method).run(ReplaceContext(pruned, fit_ids, removed, ReplaceOptions(
                            samples=args.replace_samples, objective=args.replace_objective)))
                    except ShortLLMError as err:  # e.g. a run at block 0 has no block before it to fold into
                        row["refused"] = err.message
                        result["rows"].append(row)
                        print({"criterion": label, "replace": method, "refused": err.message}, file=sys.stderr)
                        continue
                    row["replace_s"] = round(time.perf_counter() - t, 1)
                    row["replace_record"] = record["runs"]
                drop_blocks(pruned, removed)
                t = time.perf_counter()
                row["wikitext2_ppl"] = round(ppl_of(pruned), 3)
                row["eval_s"] = round(time.perf_counter() - t, 1)
                measured[key] = (row["wikitext2_ppl"], label)
                del pruned
            result["rows"].append(row)
            print({key: row.get(key) for key in ("criterion", "replace", "removed", "wikitext2_ppl", "scoring_s")},
                  file=sys.stderr, flush=True)
            if args.out:  # keep what is measured so far
                emit(result, args.out)

    if not args.no_original:
        t = time.perf_counter()
        result["rows"].append({"criterion": "none (original)", "replace": None, "removed": [],
                               "wikitext2_ppl": round(ppl_of(loaded.model), 3),
                               "eval_s": round(time.perf_counter() - t, 1)})
    names = args.criteria.split(",")
    from_auto: dict[str, list[int]] = {}
    if "auto" in names:
        # One search gives both rows: its best one-shot candidate is `auto`, the refined set `auto --refine N`;
        # and every source's own cut is one of its candidates (same code path as `score -c <name>`).
        t = time.perf_counter()
        report = score_loaded(loaded, ScoreOptions(criterion="auto", search=SearchOptions(refine=args.refine)), k,
                              ratio=args.ratio)
        search_s = time.perf_counter() - t
        extras = report["extras"]
        result["auto"] = {"candidates": extras["candidates"], "refine_steps": extras["refine_steps"],
                          "winner": extras["winner"], "timings_s": extras["timings_s"],
                          "baseline_heldout_ppl": extras["baseline_heldout_ppl"], "search_s": round(search_s, 1)}
        for cand in extras["candidates"]:
            for source in cand["sources"]:
                from_auto.setdefault(source, cand["removed"])
        best = extras["candidates"][0]
        one_shot_s = search_s - extras["timings_s"].get("refine", 0.0)
        measure("auto", best["removed"], {"source": "+".join(best["sources"]), "heldout_ppl": best["heldout_ppl"],
                                          "scoring_s": round(one_shot_s, 1)})
        if args.refine and extras["refine_steps"]:
            measure(f"auto --refine {args.refine}", extras["winner"]["removed"],
                    {"source": extras["winner"]["source"], "heldout_ppl": extras["winner"]["heldout_ppl"],
                     "scoring_s": round(search_s, 1)})
    for name in names:
        if name == "auto":
            continue
        if name in from_auto:
            measure(name, from_auto[name], {"scoring_s": result["auto"]["timings_s"]["sources"].get(name),
                                            "scored": "within auto (the same criterion code)"})
            continue
        t = time.perf_counter()
        report = score_loaded(loaded, ScoreOptions(criterion=name), k, ratio=args.ratio)
        removed = fit_within_ratio(counts, args.ratio, lambda m: removal_from_report(report, m), k, name)
        measure(name, removed, {"scoring_s": round(time.perf_counter() - t, 1)})
    result["machine"] = machine()
    emit(result, args.out)


if __name__ == "__main__":
    main()
