"""Healing benchmark: prune the embedded model by 20%, heal it with each method (and combinations) for the same
wall-clock budget or the same token budget, and compare WikiText-2 perplexity, the share of the log-perplexity
gap recovered, tokens/s and peak memory; plus a plain transformers ``Trainer`` doing CPT on the same model,
data, batch and sequence length, for tokens/s.

Methods (``--methods``, comma-separated; ``+`` combines):

    lora, cpt, kd                 the three base methods
    kd+hidden                     kd with --kd-hidden nmse (hidden-state distillation at matched depths)
    cpt+last3, kd+last3           partial-layer training: --train-blocks last:3 --train-head
    kd+hidden+last3               both
    kd+warmup                     kd after --teacher-warmup-steps 4 (teacher correction)
    lin+kd                        prune the same run with --replace linear (ReplaceMe's training-free map, fitted
                                  on the same --replace-samples (256) x 128 healing tokens; its fit time counts), then kd
    block+kd, block+kd+hidden     prune with --replace block (LLM-Streamline), then kd. The cut has the same
                                  parameter count as the others: ``--block-blocks`` (12-19: a contiguous run of
                                  8 whose last slot holds the trained block, so 7 blocks go; the pure cut of
                                  12-18 is the best 7-block cut of any criterion, WikiText-2 ppl 132.5). The
                                  block trains on --replace-samples (256) x 128 healing tokens; that time counts in
                                  the method's budget, and the perplexity right after it is reported.
    kd+from-cut, block+kd+from-cut  partial-layer training from the first cut on (--train-blocks from-cut:0, head
                                  frozen): the teacher takes the frozen leading blocks' output from the student
    block+kd+blocks               every block trained, the embeddings, final norm and head frozen (--train-blocks
                                  all without --train-head): no gradient or AdamW state for the 28M-row tied table
    kd+blocks                     kd with every block trained, the embeddings, final norm and head frozen (on
                                  --blocks: no stand-in to fit)
    block+kd+blocks+support,      the same with --kd-support 64 (64 draws beyond the top 64): the KL estimated
    kd+blocks+support             from the student's logits at 128 tokens a position, so its output head is never
                                  applied to the whole vocabulary
    trainer                       transformers.Trainer, CPT (tokens/s reference; its ppl is reported too)

Budgets: ``--minutes M`` gives every method M minutes of training (every one but ``trainer`` with ``retrain
--max-time``: the cosine schedule follows the clock and ends with the budget, and the run stops before a step
that would end past it; ``budget_s`` and ``time_up`` are recorded beside ``wall_s``); ``--tokens N`` gives
every method N training tokens instead. Each method runs in a fresh process, so its peak resident memory is its
own.
Perplexity: WikiText-2 test joined with "\\n\\n", cut into 128-token windows, the first ``--ppl-windows`` (200)
scored.

    python benchmarks/heal.py --data-dir ../shared/data --minutes 10 --blocks 4,5,12,13,14,17,25 \\
        --methods lora,cpt,kd,kd+hidden,kd+hidden+last3,block+kd,trainer --minutes-for trainer=2 \\
        --out benchmarks/results/heal.json
    python benchmarks/heal.py --data-dir ../shared/data --minutes 0.3 --ppl-windows 2 --methods cpt,kd+hidden   # smoke

Prints one line per method and writes a JSON report and a plot of held-out loss against training tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

COMBOS = {
    "kd+hidden": ("kd", {"kd_hidden": "nmse"}),
    "cpt+last3": ("cpt", {"train_blocks": "last:3", "train_head": True}),
    "kd+last3": ("kd", {"train_blocks": "last:3", "train_head": True}),
    "kd+hidden+last3": ("kd", {"kd_hidden": "nmse", "train_blocks": "last:3", "train_head": True}),
    "kd+warmup": ("kd", {"teacher_warmup_steps": 4}),
    "block+kd": ("kd", {"replace_block": True}),
    "lin+kd": ("kd", {"replace": "linear"}),
    "block+kd+hidden": ("kd", {"replace_block": True, "kd_hidden": "nmse"}),
    "block+kd+from-cut": ("kd", {"replace_block": True, "train_blocks": "from-cut:0"}),
    "kd+from-cut": ("kd", {"train_blocks": "from-cut:0"}),
    "block+kd+blocks": ("kd", {"replace_block": True, "train_blocks": "all"}),
    "kd+blocks": ("kd", {"train_blocks": "all"}),
    "block+kd+blocks+support": ("kd", {"replace_block": True, "train_blocks": "all", "kd_support": 64}),
    "kd+blocks+support": ("kd", {"train_blocks": "all", "kd_support": 64}),
}


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


def ppl_of(spec: str, data_dir: str, windows: int) -> float:
    from shortllm.data import load_documents
    from shortllm.models.loading import LoadSettings, load_model

    text = load_documents("wikitext2", "test", data_dir=data_dir).joined("\n\n")
    loaded = load_model(spec, LoadSettings(device="cpu", dtype="float32"))
    return perplexity(loaded.model, loaded.tokenizer, text, windows)


# ------------------------------------------------------------------------------------------ one method (child)

def _config(job: dict, model: str, out: Path, **kw):
    from shortllm.models.loading import LoadSettings
    from shortllm.training import TrainConfig
    from shortllm.training.config import DataOptions, KDOptions

    extra = job["extra"]
    kd = KDOptions(hidden=extra.get("kd_hidden"), teacher_warmup_steps=extra.get("teacher_warmup_steps", 0),
                   teacher=job.get("teacher"), support=extra.get("kd_support"))
    return TrainConfig(method=job["method"], model=model, out=out,
                       data=DataOptions(data=job["train_data"], data_dir=job["data_dir"],
                                        max_eval_rows=job["eval_rows"]),
                       seq_len=job["seq_len"], batch_size=job["batch_size"], lr=job["lr"], eval_every=job["eval_every"],
                       save_every=0, kd=kd if job["method"] == "kd" else KDOptions(),
                       train_blocks=extra.get("train_blocks"), train_head=extra.get("train_head", False),
                       settings=LoadSettings(device="cpu", dtype="float32"), overwrite=True, **kw)


def run_method(job: dict) -> dict:
    """Heal ``job['pruned']`` with one method for the job's budget (in this process); return its numbers."""
    import torch

    from shortllm.training import retrain

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    work = Path(job["work"])
    model = job["pruned"]
    t0 = time.perf_counter()
    record: dict = {}
    replace = "block" if job["extra"].get("replace_block") else job["extra"].get("replace")
    if replace:
        from shortllm.models.loading import LoadSettings
        from shortllm.pruning.run import PruneRequest, prune

        from shortllm.pruning.replace import ReplaceOptions
        from shortllm.scoring.run import Calibration, ScoreOptions

        replaced = work / "replaced"
        # the stand-in is fitted on the healing corpus (--replace-samples rows of --seq-len tokens)
        cut = {"blocks": job["block_blocks" if replace == "block" else "lin_blocks"],
               "scoring": ScoreOptions(calibration=Calibration(data=job["train_data"], data_dir=job["data_dir"])),
               "replace_options": ReplaceOptions(samples=job["replace_samples"])}
        res = prune(PruneRequest(model=job["source"], out=replaced, replace=replace,
                                 settings=LoadSettings(device="cpu"), overwrite=True, **cut))
        seconds = time.perf_counter() - t0
        record["replacement"] = {"runs": res.replacement["runs"], "seconds": round(seconds, 1),
                                 "removed": res.removed_original, "params_after": res.plan.params_after,
                                 "ppl": ppl_of(str(replaced), job["data_dir"], job["ppl_windows"])}
        job = {**job, "budget_s": max(60.0, job["budget_s"] - seconds)}  # the replacement's training counts
        model = str(replaced)
    tokens_per_step = job["batch_size"] * job["seq_len"]
    budget: dict = {}
    if job["tokens"]:
        steps = max(1, job["tokens"] // tokens_per_step)
    elif job["method"] == "trainer":
        steps = None  # runs until the budget is spent (a callback stops it)
    else:  # retrain --max-time: the schedule follows the clock; the step count is only an upper bound
        steps, budget = 10**6, {"max_time": job["budget_s"]}
        record["budget_s"] = round(job["budget_s"], 1)
    if job["method"] == "trainer":
        record.update(_hf_trainer(job, model, steps))
    else:
        result = retrain(_config(job, model, work / "out", max_steps=steps, **budget))
        record.update(steps=result.steps, tokens=result.tokens_seen, wall_s=result.wall_time_s,
                      time_up=result.time_up,
                      tokens_per_s=result.tokens_seen / result.wall_time_s, final_train_loss=result.final_loss,
                      held_out_loss=[result.initial_eval_loss, result.final_eval_loss], eval_curve=result.eval_curve,
                      trainable_params=result.trainable_params, loss_path=result.loss_path,
                      teacher_shared_blocks=result.teacher_shared_blocks,
                      time_to_first_step_s=round(result.timings.get("load", 0), 1))
    import resource

    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    record["ppl"] = ppl_of(str(work / "out"), job["data_dir"], job["ppl_windows"])
    return record


def _hf_trainer(job: dict, model_dir: str, steps: int) -> dict:
    """transformers.Trainer, CPT on the same packed rows, batch and sequence length (AdamW, same lr, cosine),
    with the same held-out rows evaluated as often as shortllm's runs evaluate them (their time is in both tokens/s)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.training.data.rows import load_train_data
    from shortllm.training.config import DataOptions

    loaded = load_model(model_dir, LoadSettings(device="cpu", dtype="float32"))
    data = load_train_data(loaded.tokenizer, DataOptions(data=job["train_data"], data_dir=job["data_dir"],
                                                         max_eval_rows=job["eval_rows"]), job["seq_len"])
    rows = [{"input_ids": r, "labels": r} for r in data.train.input_ids]
    held_out = [{"input_ids": r, "labels": r} for r in data.eval.input_ids]

    class Budget(TrainerCallback):
        def on_step_end(self, _args, state, control, **_):
            if steps is None and time.perf_counter() - t > job["budget_s"]:
                control.should_training_stop = True

    args = TrainingArguments(output_dir=str(Path(job["work"]) / "hf"), per_device_train_batch_size=job["batch_size"],
                             # with a time budget the step count is unknown: a constant lr (a cosine or warm-up
                             # over a made-up length would keep it near 0 and the row would learn nothing)
                             max_steps=steps or 10**6, learning_rate=job["lr"],
                             lr_scheduler_type="cosine" if steps else "constant", warmup_steps=0.05 if steps else 0,
                             weight_decay=0.1, adam_beta2=0.95, logging_steps=max(1, (steps or 10) // 10), save_strategy="no",
                             report_to=[], use_cpu=True, dataloader_num_workers=0, seed=1234,
                             # the same held-out evaluation as shortllm's rows: its rows, every eval_every steps
                             eval_strategy="steps", eval_steps=job["eval_every"],
                             per_device_eval_batch_size=job["batch_size"])
    trainer = Trainer(model=loaded.model, args=args, train_dataset=rows, eval_dataset=held_out,
                      data_collator=lambda b: {k: torch.stack([x[k] for x in b]) for k in b[0]}, callbacks=[Budget()])
    t = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t
    steps = trainer.state.global_step
    loaded.model.save_pretrained(Path(job["work"]) / "out")
    loaded.tokenizer.save_pretrained(Path(job["work"]) / "out")
    tokens = steps * job["batch_size"] * job["seq_len"]
    return {"steps": steps, "tokens": tokens, "wall_s": wall, "tokens_per_s": tokens / wall,
            "final_train_loss": out.training_loss}


# ------------------------------------------------------------------------------------------------- driver

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with wikitext-2-raw/ and pretrain/ (docs/data.md)")
    parser.add_argument("--train-data", default="c4", help="training text spec (default: the C4 slice)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=4.0, help="training wall-clock minutes per method")
    budget.add_argument("--tokens", type=int, help="or training tokens per method")
    parser.add_argument("--minutes-for", default="", help="per-method wall-clock minutes overriding --minutes, "
                        "e.g. trainer=2 (the Trainer row is there for its tokens/s)")
    parser.add_argument("--methods", default="lora,cpt,kd,kd+hidden,kd+last3,block+kd,trainer")
    parser.add_argument("--ppl-windows", type=int, default=200, help="WikiText-2 windows scored (0: all)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-for", default="", help="per-method learning rates overriding --lr, e.g. kd=1e-3")
    parser.add_argument("--eval-rows", type=int, default=8, help="held-out rows of each run's loss curve")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--source", default="smollm2-135m", help="the unpruned model (a tiny one for smoke runs)")
    parser.add_argument("--pruned", type=Path, help="reuse a pruned folder (made with --blocks) instead of pruning")
    parser.add_argument("--blocks", default="4,5,12,13,14,17,25", help="blocks to prune (and to replace for block+)")
    parser.add_argument("--block-blocks", default="12-19",
                        help="the cut of block+ methods: each contiguous run's last block stays as its trained replacement")
    parser.add_argument("--replace-samples", type=int, default=256, help="calibration rows of block+/lin+ fits")
    parser.add_argument("--lin-blocks", default="12-18", help="the cut of lin+ methods (the map folds into block 11)")
    parser.add_argument("--threads", type=int, help="torch threads per method (1 is faster on a busy machine)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heal.json"))
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder of models made")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one method in its own process: its peak memory is its own
        job = json.loads(Path(args.child).read_text())
        Path(job["result"]).write_text(json.dumps(run_method(job), default=str))
        return

    from shortllm.models.loading import LoadSettings
    from shortllm.pruning.plan import parse_blocks
    from shortllm.pruning.run import PruneRequest, prune

    work = Path(tempfile.mkdtemp(prefix="shortllm-heal-"))
    blocks = parse_blocks(args.blocks)
    report: dict = {"command": " ".join(sys.argv), "machine": machine(), "budget": {
        "minutes": None if args.tokens else args.minutes, "tokens": args.tokens}, "ppl_windows": args.ppl_windows,
        "train_data": args.train_data, "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": args.lr,
        "blocks": blocks, "methods": {}}
    report["source"] = args.source
    report["original_ppl"] = ppl_of(args.source, args.data_dir, args.ppl_windows)
    pruned = args.pruned or work / "pruned"
    if args.pruned is None:
        prune(PruneRequest(model=args.source, out=pruned, blocks=blocks, settings=LoadSettings(device="cpu")))
    report["pruned_ppl"] = ppl_of(str(pruned), args.data_dir, args.ppl_windows)
    print(f"original ppl {report['original_ppl']:.2f}; pruned (blocks {args.blocks}) {report['pruned_ppl']:.2f}",
          flush=True)
    gap = math.log(report["pruned_ppl"]) - math.log(report["original_ppl"])
    minutes_for, lr_for = per_method(args.minutes_for), per_method(args.lr_for)
    if minutes_for:
        report["budget"]["minutes_for"] = minutes_for
    if lr_for:
        report["lr_for"] = lr_for
    for name in args.methods.split(","):
        method, extra = COMBOS.get(name, (name, {}))
        job = {"method": method, "extra": extra, "pruned": str(pruned), "source": args.source, "blocks": blocks,
               "teacher": args.source, "train_data": args.train_data, "data_dir": args.data_dir,
               "seq_len": args.seq_len, "batch_size": args.batch_size, "lr": lr_for.get(name, args.lr), "eval_rows": args.eval_rows,
               "eval_every": args.eval_every, "tokens": args.tokens, "budget_s": minutes_for.get(name, args.minutes) * 60,
               "ppl_windows": args.ppl_windows, "threads": args.threads,
               "block_blocks": parse_blocks(args.block_blocks), "lin_blocks": parse_blocks(args.lin_blocks),
               "replace_samples": args.replace_samples,
               "work": str(work / name.replace("+", "_")),
               "result": str(work / f"{name.replace('+', '_')}.json")}
        Path(job["work"]).mkdir(parents=True, exist_ok=True)
        (work / "job.json").write_text(json.dumps(job))
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", str(work / "job.json")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr[-3000:]}", flush=True)
            report["methods"][name] = {"error": proc.stderr[-3000:]}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
            continue
        rec = json.loads(Path(job["result"]).read_text())
        rec["seconds_all_in"] = round(time.perf_counter() - t, 1)
        rec["log_gap_recovered"] = (math.log(report["pruned_ppl"]) - math.log(rec["ppl"])) / gap if gap > 0 else None
        report["methods"][name] = rec
        recovered = "n/a" if rec["log_gap_recovered"] is None else f"{rec['log_gap_recovered']:.1%}"
        print(f"{name}: {rec['steps']} steps, {rec['tokens']} tokens in {rec['wall_s']:.0f} s "
              f"({rec['tokens_per_s']:.0f} tok/s), peak RSS {rec['peak_rss_mb']:.0f} MiB; wikitext2 ppl {rec['ppl']:.2f}"
              f" ({recovered} of the log gap recovered)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    _plot(report, args.out.with_suffix(".png"))
    if args.keep_work:
        print(f"work folder kept: {work}", flush=True)
    else:  # the pruned, replaced and healed models of every method: 1-4 GB a run
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in report.items() if k != "methods"}, indent=2, default=str))


def per_method(spec: str) -> dict[str, float]:
    """``"trainer=2,kd=1e-3"`` -> ``{"trainer": 2.0, "kd": 0.001}`` (an override per method name)."""
    return {k: float(v) for k, v in (item.split("=") for item in spec.split(",") if item)}


def _plot(report: dict, path: Path) -> None:
    """Held-out loss against training tokens, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rec in report["methods"].items():
        curve = rec.get("eval_curve") or []
        if curve:
            ax.plot([p["tokens"] for p in curve], [p["loss"] for p in curve], marker="o", label=name)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out loss (nats/token)")
    budget = report["budget"]
    ax.set_title(f"Healing {report['source']} minus blocks {report['blocks']}: "
                 + (f"{budget['tokens']:,} tokens" if budget["tokens"] else f"{budget['minutes']} min") + " each")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
