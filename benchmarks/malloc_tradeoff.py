"""Speed against peak memory of ``retrain --method kd``: glibc allocator settings and the memory options.

``SHORTLLM_MMAP_THRESHOLD_MB=N`` makes ``retrain`` fix glibc's mmap threshold at N MiB
(``shortllm.training.run.release_freed_memory``): every allocation of N MiB or more is then a fresh ``mmap``,
returned to the system when freed, which lowers the peak resident memory but costs a page fault per page touched. This runs the README's kd
command (the embedded model pruned by 20%, C4 slice, batch 4 x 128 tokens) for a few steps, each setting in a
fresh process under ``/usr/bin/time -v``, and reports tokens/s and peak RSS:

* ``1MiB``: ``SHORTLLM_MMAP_THRESHOLD_MB=1`` (the default of shortllm 0.1's unreleased line, before this benchmark);
* ``glibc``: glibc's own dynamic threshold (the default);
* ``8MiB``: ``SHORTLLM_MMAP_THRESHOLD_MB=8``;

and the options that lower the floor (student weights, gradients and AdamW moments, teacher), each with glibc's
default allocator unless named:

* ``ckpt``: ``--gradient-checkpointing``;
* ``bf16-teacher``: ``--teacher-dtype bfloat16``;
* ``in-backward``: ``--optimizer-in-backward``;
* ``low``: all three; ``low+1MiB`` / ``low+8MiB``: all three with ``SHORTLLM_MMAP_THRESHOLD_MB=1`` / ``8``.
* ``low+1MiB+blocks``: ``low+1MiB`` with ``--train-blocks all`` (every block trained; the embeddings, final
  norm and head frozen: no gradient and no AdamW state for the tied 49k x 576 table).

    python benchmarks/malloc_tradeoff.py --data-dir ../shared/data --steps 6
    python benchmarks/malloc_tradeoff.py --data-dir ../shared/data --steps 6 --settings glibc,ckpt,low,low+8MiB,low+1MiB \
        --out benchmarks/results/kd_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402

ONE_MIB = {"SHORTLLM_MMAP_THRESHOLD_MB": "1"}
LOW = ["--gradient-checkpointing", "--teacher-dtype", "bfloat16", "--optimizer-in-backward"]
SETTINGS = {  # name: (environment, retrain options)
    "1MiB": (ONE_MIB, []), "glibc": ({}, []), "8MiB": ({"SHORTLLM_MMAP_THRESHOLD_MB": "8"}, []),
    "ckpt": ({}, ["--gradient-checkpointing"]), "bf16-teacher": ({}, ["--teacher-dtype", "bfloat16"]),
    "in-backward": ({}, ["--optimizer-in-backward"]), "low": ({}, LOW), "low+1MiB": (ONE_MIB, LOW),
    "low+8MiB": ({"SHORTLLM_MMAP_THRESHOLD_MB": "8"}, LOW),
    "low+1MiB+blocks": (ONE_MIB, LOW + ["--train-blocks", "all"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with pretrain/ (the C4 slice)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--blocks", default="4,5,12,13,14,17,25", help="blocks pruned from the embedded model")
    parser.add_argument("--settings", default="1MiB,glibc,8MiB", help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--out", default="benchmarks/results/malloc_tradeoff.json", help="JSON report path")
    args = parser.parse_args()
    shortllm = [sys.executable, "-m", "shortllm.cli.app"]
    work = Path(tempfile.mkdtemp(prefix="shortllm-malloc-"))
    subprocess.run([*shortllm, "prune", "--blocks", args.blocks, "--out", str(work / "pruned")], check=True,
                   capture_output=True)
    rows = {}
    for name in args.settings.split(","):
        env, options = SETTINGS[name]
        out = work / name
        done = subprocess.run(
            ["/usr/bin/time", "-v", *shortllm, "retrain", "--method", "kd", "-m", str(work / "pruned"), "--data", "c4",
             "--data-dir", args.data_dir, "--max-steps", str(args.steps), "--seq-len", "128", "--save-every", "0",
             *options, "--out", str(out)], env={**{k: v for k, v in os.environ.items() if k != "SHORTLLM_MMAP_THRESHOLD_MB"}, **env}, capture_output=True, text=True)
        tok = re.search(r"\(([\d.]+) tokens/s\)", done.stdout + done.stderr)
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        manifest = out / "shortllm.json"
        curve = json.loads(manifest.read_text())["results"]["loss_curve"] if manifest.exists() else []
        rows[name] = {"env": env, "options": options, "rc": done.returncode,
                      "tokens_per_s": float(tok.group(1)) if tok else None,
                      "peak_rss_mib": round(int(rss.group(1)) / 1024, 1) if rss else None,
                      # step 1's KL is measured before any update: it differs only by the teacher's storage
                      "first_step_kl": curve[0].get("kl") if curve else None,
                      "last_step_loss": curve[-1].get("loss") if curve else None}
        print(f"{name}: {rows[name]['tokens_per_s']} tokens/s, peak {rows[name]['peak_rss_mib']} MiB", file=sys.stderr)
    emit({"benchmark": "malloc_tradeoff", "machine": machine(), "steps": args.steps, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
