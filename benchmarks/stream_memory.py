"""Streaming vs in-memory training text: peak memory against corpus size.

Writes synthetic JSON-lines corpora of growing size (documents drawn from Python's pydoc topics, or from
``--source`` if given, repeated with their order shuffled), then packs each one into ``--seq-len`` blocks of the
embedded model's tokenizer twice, each in a fresh process so the peak resident memory (``ru_maxrss``) is that of
one job alone:

* ``memory``: ``load_documents`` + ``pack_documents`` (what ``retrain`` does without ``--streaming``);
* ``streaming``: ``stream_documents`` + ``iter_blocks``, counting blocks (what ``retrain --streaming`` does).

Target: the streaming peak stays flat as the corpus grows; the in-memory peak grows with it.

    python benchmarks/stream_memory.py --sizes-mb 16,64,128 --out benchmarks/results/stream_memory.json
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402


def write_corpus(path: Path, megabytes: float, seed: int, source: str | None) -> int:
    """JSON lines of documents until the file holds ``megabytes`` MB; returns the number of documents."""
    if source:
        from shortllm.data import load_documents

        docs = [d for d in load_documents(source).documents if d.strip()]
    else:
        from pydoc_data.topics import topics

        docs = list(topics.values())
    rng = random.Random(seed)
    target, written, n = int(megabytes * 1e6), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(docs)
            for d in docs:
                line = json.dumps({"text": d}) + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                n += 1
                if written >= target:
                    break
    return n


CHILD = """
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from transformers import AutoTokenizer
from shortllm.models.demo import demo_model_dir
from shortllm.data import iter_blocks, load_documents, pack_documents, stream_documents
mode, path, seq_len = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(demo_model_dir())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "memory":
    blocks = pack_documents(tok, load_documents(path), seq_len)
    n = blocks.shape[0]
else:
    n = sum(1 for _ in iter_blocks(tok, stream_documents(path), seq_len))
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"blocks": n, "seconds": secs, "peak_rss_mb": peak / 1024, "before_mb": base / 1024}))
"""


def measure(mode: str, path: Path, seq_len: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(seq_len)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", default="16,64,128", help="corpus sizes in MB (comma-separated)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--source", help="documents to repeat (a data spec; default: pydoc topics)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="shortllm-stream-") as tmp:
        for size in (float(s) for s in args.sizes_mb.split(",")):
            path = Path(tmp) / f"corpus-{size:g}mb.jsonl"
            docs = write_corpus(path, size, args.seed, args.source)
            row = {"size_mb": size, "documents": docs}
            for mode in ("streaming", "memory"):
                t = time.perf_counter()
                row[mode] = measure(mode, path, args.seq_len)
                print(f"{size:g} MB {mode}: {row[mode]['peak_rss_mb']:.0f} MB peak, {row[mode]['blocks']} blocks "
                      f"in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            assert row["streaming"]["blocks"] == row["memory"]["blocks"], "streaming and memory disagree"
            rows.append(row)
            path.unlink()
    emit({"benchmark": "stream_memory", "seq_len": args.seq_len, "machine": machine(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
