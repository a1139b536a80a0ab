"""Healing benchmark: prune the embedded model by 20%, heal it with lora / cpt / kd for the same CPU wall-clock
budget each, and compare WikiText-2 perplexity before and after.

Perplexity follows the paper protocol: the WikiText-2 test rows joined with "\\n\\n", tokenized once, cut into
non-overlapping 128-token windows; the first ``--ppl-windows`` windows are scored (all of them with 0).
Each method first runs 3 calibration steps (not counted) to measure its seconds per step (steps 2-3); its step
budget is then ``budget / seconds-per-step`` so that the cosine schedule ends when the budget does. Training and
held-out numbers come from the run's own manifest fields (tokens seen, wall time, held-out loss).

    python benchmarks/heal.py --data-dir ../shared/data --budget-s 600 --lr 3e-4 --ppl-windows 200 \
        --blocks 4,5,12,13,14,17,25 --out benchmarks/results/heal.json

Prints one line per stage and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402


def perplexity(model, tokenizer, text: str, windows: int, seq_len: int = 128, batch: int = 8) -> float:
    """exp(mean next-token NLL) over the first ``windows`` non-overlapping windows of the tokenized text."""
    import torch
    import torch.nn.functional as F

    ids = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    n = len(ids) // seq_len
    n = min(n, windows) if windows else n
    rows = ids[: n * seq_len].view(n, seq_len)
    nll, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            x = rows[i:i + batch].to(next(model.parameters()).device)
            logits = model(x, use_cache=False).logits[:, :-1].float()
            nll += F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1), reduction="sum").item()
            count += x[:, 1:].numel()
    return math.exp(nll / count)


def ppl_of(spec: str, text: str, windows: int) -> tuple[float, float]:
    from shortllm.models.loading import LoadSettings, load_model

    t = time.perf_counter()
    loaded = load_model(spec, LoadSettings(device="cpu", dtype="float32"))
    return perplexity(loaded.model, loaded.tokenizer, text, windows), time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with wikitext-2-raw/ and pretrain/ (docs/data.md)")
    parser.add_argument("--train-data", default="c4", help="training text spec (default: the C4 slice)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="training wall-clock seconds per method")
    parser.add_argument("--methods", default="lora,cpt,kd")
    parser.add_argument("--ppl-windows", type=int, default=100, help="WikiText-2 windows scored (0: all)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--pruned", type=Path, help="reuse a pruned folder instead of pruning now")
    parser.add_argument("--blocks", help="prune these blocks (e.g. the ppl criterion's choice from an earlier "
                        "`shortllm score`/`prune --ratio 0.2`) instead of scoring now")
    parser.add_argument("--steps", default="", help="fixed steps per method, e.g. cpt=16,kd=12 (no probe for those)")
    parser.add_argument("--threads", type=int, help="torch threads (1 is much faster on a busy machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heal.json"))
    args = parser.parse_args()

    import torch

    from shortllm.data import load_documents
    from shortllm.models.loading import LoadSettings
    from shortllm.pruning.run import PruneRequest, prune
    from shortllm.training import TrainConfig, retrain
    from shortllm.training.config import DataOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="shortllm-heal-"))
    text = load_documents("wikitext2", "test", data_dir=args.data_dir).joined("\n\n")
    report: dict = {"command": " ".join(sys.argv), "machine": machine(), "budget_s": args.budget_s,
                    "ppl_windows": args.ppl_windows, "train_data": args.train_data,
                    "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr, "methods": {}}

    ppl, secs = ppl_of("smollm2-135m", text, args.ppl_windows)
    report["original_ppl"] = ppl
    print(f"original: wikitext2 ppl {ppl:.2f} ({secs:.0f} s)", flush=True)

    pruned = args.pruned
    if pruned is None:
        pruned = work / "pruned"
        t = time.perf_counter()
        from shortllm.pruning.plan import parse_blocks

        how = {"blocks": parse_blocks(args.blocks)} if args.blocks else {"ratio": 0.2}  # ratio: ppl criterion
        result = prune(PruneRequest(model=None, out=pruned, settings=LoadSettings(device="cpu"), **how))
        report["prune"] = {"removed": result.removed_original, "achieved_ratio": result.plan.achieved_ratio,
                           "seconds": time.perf_counter() - t}
        print(f"pruned blocks {result.removed_original} ({result.plan.achieved_ratio:.1%} of parameters)", flush=True)
    ppl, _ = ppl_of(str(pruned), text, args.ppl_windows)
    report["pruned_ppl"] = ppl
    print(f"pruned: wikitext2 ppl {ppl:.2f}", flush=True)
    gap = math.log(report["pruned_ppl"]) - math.log(report["original_ppl"])

    for method in args.methods.split(","):
        base = TrainConfig(method=method, model=str(pruned), out=work / f"probe-{method}",
                           data=DataOptions(data=args.train_data, data_dir=args.data_dir, max_eval_rows=4),
                           seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr, eval_every=0, save_every=0,
                           max_steps=1000, stop_after=3, checkpoint_dir=work / f"probe-{method}.ckpt",
                           settings=LoadSettings(device="cpu", dtype="float32"))
        fixed = dict(item.split("=") for item in args.steps.split(",") if item)
        if method in fixed:
            steps = int(fixed[method])
        else:
            stamps: list[float] = []
            retrain(base, on_step=lambda *_, stamps=stamps: stamps.append(time.perf_counter()))
            per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # steps 2..3: the first one warms up
            steps = max(1, int(args.budget_s / per_step))
            shutil.rmtree(work / f"probe-{method}.ckpt", ignore_errors=True)
            print(f"{method}: {per_step:.1f} s/step in the probe -> {steps} steps", flush=True)
        cfg = replace(base, out=work / method, max_steps=steps, stop_after=None, checkpoint_dir=None)
        result = retrain(cfg)
        healed, _ = ppl_of(str(work / method), text, args.ppl_windows)
        recovered = (math.log(report["pruned_ppl"]) - math.log(healed)) / gap if gap > 0 else None
        report["methods"][method] = {
            "steps": result.steps, "tokens": result.tokens_seen, "wall_s": result.wall_time_s,
            "tokens_per_s": result.tokens_seen / result.wall_time_s, "final_train_loss": result.final_loss,
            "held_out_loss": [result.initial_eval_loss, result.final_eval_loss], "ppl": healed,
            "log_gap_recovered": recovered, "trainable_params": result.trainable_params,
        }
        print(f"{method}: {result.steps} steps, {result.tokens_seen} tokens in {result.wall_time_s:.0f} s "
              f"({result.tokens_seen / result.wall_time_s:.0f} tok/s); wikitext2 ppl {healed:.2f}; "
              f"log-ppl gap recovered {recovered:.1%}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
