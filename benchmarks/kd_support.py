"""``retrain --kd-support``: how close the estimated KL is to the exact one, and what it saves per step.

On the embedded SmolLM2-135M pruned by 20% (the blocks of benchmarks/heal.py) and batches of 4 x 128 C4 tokens:

1. **Estimate quality.** For each (K, M) in ``--supports``, over ``--batches`` batches: the estimated KL and CE
   against the exact full-vocabulary sums (relative error of the batch sums), and the cosine between the
   estimated and the exact gradient of the KL with respect to the student's final hidden states (the part of
   the objective the estimate replaces), plus the time of the loss and its backward alone. The draws use a
   fixed seed.
2. **Step time.** ``retrain --method kd --train-blocks all`` for ``--steps`` steps with the exact KL and with
   ``--kd-support K`` (the first K of ``--supports``), alternating ``--repeats`` times, each run in a fresh
   process; seconds per step are the median over steps 3 onwards.

    python benchmarks/kd_support.py --data-dir ../shared/data --out benchmarks/results/kd_support.json
    python benchmarks/kd_support.py --data-dir ../shared/data --batches 1 --steps 4 --repeats 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402

BLOCKS = [4, 5, 12, 13, 14, 17, 25]


def _parse_supports(spec: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in item.split(":")) for item in spec.split(",")]  # type: ignore[misc]


def quality(pruned: Path, data_dir: str, supports: list[tuple[int, int]], batches: int) -> list[dict]:
    """Estimated against exact KL/CE sums and KL gradients, per (K, M), over ``batches`` batches of 4 x 128."""
    import torch

    from shortllm.data import load_documents
    from shortllm.models.loading import LoadSettings, load_model
    from shortllm.training.objectives.head import no_logits, output_head
    from shortllm.training.objectives.losses import chunked_token_sums

    settings = LoadSettings(device="cpu", dtype="float32")
    student = load_model(str(pruned), settings)
    teacher = load_model("smollm2-135m", settings)
    text = load_documents("c4", "train", data_dir=data_dir).joined("\n\n")
    # the end of the slice: retrain holds it out (its training rows come first)
    ids = torch.tensor(student.tokenizer(text[-400_000:], add_special_tokens=False)["input_ids"])
    rows = ids[: batches * 4 * 128].view(batches, 4, 128)
    head, t_head = output_head(student.model), output_head(teacher.model)
    finals = []
    with torch.no_grad():
        for batch in rows:
            kw = {"use_cache": False, "output_hidden_states": True, "logits_to_keep": no_logits("cpu")}
            hs = student.model(batch, **kw).hidden_states[-1][:, :-1].flatten(0, 1)
            ht = teacher.model(batch, **kw).hidden_states[-1][:, :-1].flatten(0, 1)
            finals.append((hs, ht, batch[:, 1:].reshape(-1)))

    def losses(hs, ht, y, support):
        h = hs.clone().requires_grad_()
        t0 = time.perf_counter()
        ce, kl = chunked_token_sums(h, y, head, ht, t_head, support=support)
        (grad,) = torch.autograd.grad(kl, h)
        return ce.item(), kl.item(), grad, time.perf_counter() - t0

    exact = [losses(*f, None) for f in finals]
    rows_out = [{"support": None, "loss_and_backward_s": statistics.median(e[3] for e in exact)}]
    for k, m in supports:
        torch.manual_seed(0)
        est = [losses(*f, (k, m)) for f in finals]
        rows_out.append({
            "support": k, "tail_samples": m,
            "kl_rel_error": [round((e[1] - x[1]) / x[1], 5) for e, x in zip(est, exact)],
            "ce_rel_error": [round((e[0] - x[0]) / x[0], 6) for e, x in zip(est, exact)],
            "kl_grad_cosine": [round(torch.nn.functional.cosine_similarity(e[2].flatten(), x[2].flatten(), dim=0)
                                     .item(), 5) for e, x in zip(est, exact)],
            "loss_and_backward_s": statistics.median(e[3] for e in est),
        })
    return rows_out


def child(job: dict) -> dict:
    """One retrain run in this process: per-step timestamps -> median seconds per step from step 3 on."""
    from shortllm.models.loading import LoadSettings
    from shortllm.training import TrainConfig, retrain
    from shortllm.training.config import DataOptions, KDOptions

    stamps: list[float] = []
    cfg = TrainConfig(method="kd", model=job["pruned"], out=Path(job["out"]),
                      data=DataOptions(data="c4", data_dir=job["data_dir"], max_eval_rows=8), seq_len=128,
                      batch_size=4, lr=3e-4, eval_every=0, save_every=0, train_blocks="all",
                      max_steps=job["steps"],
                      kd=KDOptions(support=job["support"], tail_samples=job["tail_samples"] if job["support"] else None),
                      settings=LoadSettings(device="cpu", dtype="float32"), overwrite=True)
    result = retrain(cfg, on_step=lambda *_: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][1:]
    return {"support": job["support"], "s_per_step": statistics.median(gaps), "steps": len(stamps),
            "held_out_loss": [result.initial_eval_loss, result.final_eval_loss]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--supports", default="64:64,64:0,32:32,128:128", help="K:M pairs, comma-separated")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(Path(args.child).read_text()))))
        return

    from shortllm.models.loading import LoadSettings
    from shortllm.pruning.run import PruneRequest, prune

    supports = _parse_supports(args.supports)
    with tempfile.TemporaryDirectory(prefix="shortllm-kd-support-") as tmp:
        pruned = Path(tmp) / "pruned"
        prune(PruneRequest(model="smollm2-135m", out=pruned, blocks=BLOCKS, settings=LoadSettings(device="cpu")))
        report = {"command": "benchmarks/kd_support.py " + " ".join(sys.argv[1:]), "machine": machine(),
                  "blocks": BLOCKS, "quality": quality(pruned, args.data_dir, supports, args.batches), "steps": []}
        k, m = supports[0]
        for repeat in range(args.repeats):
            for support in (None, k) if repeat % 2 == 0 else (k, None):
                job = Path(tmp) / "job.json"
                job.write_text(json.dumps({"pruned": str(pruned), "data_dir": args.data_dir, "steps": args.steps,
                                           "support": support, "tail_samples": m, "out": str(Path(tmp) / "o")}))
                proc = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--child", str(job)],
                                      capture_output=True, text=True, check=True)
                line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
                report["steps"].append(json.loads(line[len("RESULT "):]))
        for name in (None, k):
            runs = [r["s_per_step"] for r in report["steps"] if r["support"] == name]
            report[f"s_per_step_{'exact' if name is None else f'support_{k}'}"] = statistics.median(runs)
    emit(report, args.out)


if __name__ == "__main__":
    main()
