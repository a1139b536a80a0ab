"""Training speed side by side: shortllm's loop (cpt, kd) against a plain transformers ``Trainer`` doing cpt on
the same model, data, batch, sequence length and optimizer (fused AdamW, clipping at 1.0); ``-small-chunks``
runs apply the output head in the 32 MiB checkpointed chunks used before 2026-12-01 (170 tokens of a 49k
vocabulary), against one 128 MiB chunk now.

Each run is a fresh process (its peak resident memory is its own), and the runs alternate ``--rounds`` times so
drift in the machine's speed falls on all of them alike. Seconds per step are the median over steps 2 to N-1 of
each run: step 1 warms the allocator, and shortllm's last step also runs the held-out evaluation.

    python benchmarks/train_speed.py --data-dir ../shared/data --steps 8 --rounds 1 \\
        --out benchmarks/results/train_speed.json
    python benchmarks/train_speed.py --data-dir ../shared/data --steps 4 --rounds 1 --runs cpt   # smoke

``--model`` defaults to the embedded model pruned by 20% (blocks 4,5,12,13,14,17,25, as ``benchmarks/heal.py``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402

RUNS = ("cpt", "kd", "trainer", "cpt-small-chunks", "kd-small-chunks")
SMALL_CHUNKS = 1 << 23  # logits per chunk before 2026-12-01: 170-token chunks of a 49k vocabulary, checkpointed


def _per_step(stamps: list[float]) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][1:-1] or [stamps[-1] - stamps[0]]
    return statistics.median(gaps)


def run_ours(job: dict) -> float:
    from shortllm.models.loading import LoadSettings
    from shortllm.training import TrainConfig, retrain
    from shortllm.training.config import DataOptions

    if job["run"].endswith("-small-chunks"):
        from shortllm.training import losses

        losses.CHUNK_ELEMENTS = SMALL_CHUNKS
    stamps: list[float] = []
    work = Path(job["work"])
    cfg = TrainConfig(method=job["run"].split("-")[0], model=job["model"], out=work / "out", checkpoint_dir=work / "ckpt",
                      data=DataOptions(data="c4", data_dir=job["data_dir"], max_eval_rows=8), seq_len=job["seq_len"],
                      batch_size=job["batch_size"], lr=1e-4,
                      eval_every=0, save_every=0, max_steps=job["steps"], overwrite=True,
                      settings=LoadSettings(device="cpu", dtype="float32"))
    retrain(cfg, on_step=lambda *_: stamps.append(time.perf_counter()))
    return _per_step(stamps)


def run_trainer(job: dict) -> float:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.training.config import DataOptions
    from shortllm.training.data import load_train_data

    loaded = load_model(job["model"], LoadSettings(device="cpu", dtype="float32"))
    data = load_train_data(loaded.tokenizer, DataOptions(data="c4", data_dir=job["data_dir"], max_eval_rows=8),
                           job["seq_len"])
    rows = [{"input_ids": r, "labels": r} for r in data.train.input_ids]
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_args, **_kwargs):
            stamps.append(time.perf_counter())

    args = TrainingArguments(output_dir=str(Path(job["work"]) / "hf"), per_device_train_batch_size=job["batch_size"],
                             max_steps=job["steps"], learning_rate=1e-4, lr_scheduler_type="constant",
                             weight_decay=0.1, adam_beta2=0.95, save_strategy="no", report_to=[], use_cpu=True,
                             dataloader_num_workers=0, logging_steps=10**6, disable_tqdm=True)
    Trainer(model=loaded.model, args=args, train_dataset=rows, callbacks=[Stamp()],
            data_collator=lambda b: {k: torch.stack([x[k] for x in b]) for k in b[0]}).train()
    return _per_step(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with pretrain/ (the C4 slice; docs/data.md)")
    parser.add_argument("--model", help="a pruned model folder (default: the embedded model pruned by 20%%)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(Path(args.child).read_text())
        seconds = run_trainer(job) if job["run"] == "trainer" else run_ours(job)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        Path(job["result"]).write_text(json.dumps({"s_per_step": seconds, "peak_rss_mb": peak}))
        return

    work = Path(tempfile.mkdtemp(prefix="shortllm-speed-"))
    model = args.model
    if model is None:
        from shortllm.models.loading import LoadSettings
        from shortllm.pruning.run import PruneRequest, prune

        model = str(work / "pruned")
        prune(PruneRequest(model="smollm2-135m", out=Path(model), blocks=[4, 5, 12, 13, 14, 17, 25],
                           settings=LoadSettings(device="cpu")))
    samples: dict[str, list[dict]] = {run: [] for run in args.runs.split(",")}
    for _ in range(args.rounds):
        for run in samples:
            job = {"run": run, "model": model, "data_dir": args.data_dir, "steps": args.steps, "seq_len": args.seq_len,
                   "batch_size": args.batch_size, "work": str(work / run), "result": str(work / f"{run}.json")}
            (work / "job.json").write_text(json.dumps(job))
            subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", str(work / "job.json")],
                           check=True, capture_output=True)
            samples[run].append(json.loads(Path(job["result"]).read_text()))
            print(f"{run}: {samples[run][-1]['s_per_step']:.2f} s/step", file=sys.stderr, flush=True)
    tokens = args.batch_size * args.seq_len
    result = {"command": " ".join(sys.argv), "machine": machine(), "tokens_per_step": tokens, "runs": {
        run: {"s_per_step": [round(s["s_per_step"], 3) for s in got],
              "tokens_per_s": round(tokens / statistics.median(s["s_per_step"] for s in got), 1),
              "peak_rss_mb": round(max(s["peak_rss_mb"] for s in got))} for run, got in samples.items()}}
    emit(result, args.out)


if __name__ == "__main__":
    main()
