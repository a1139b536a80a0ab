"""Big models: out-of-core prune of a 7B-shaped checkpoint, against a plain copy of the same folder.

Builds a Llama checkpoint of the shape of LLaMA-7B (hidden 4096, MLP 11008, 32 blocks, vocab 32000, bf16:
6.74B parameters, ~13.5 GB) straight to disk, one tensor at a time (values: a 32 MB pool of N(0, 0.02) bf16
numbers, tiled with a random offset per tensor, so the files are incompressible and nothing model-sized is
ever in memory). Then, each in a fresh process, with wall time and peak resident memory (``/usr/bin/time -v``):

* ``cp``: ``cp -r`` of the folder, then ``sync`` (the reference: the cost of reading and writing the bytes);
* ``prune``: ``shortllm prune --blocks ...`` (6 blocks), then ``sync``; the blocks are known before loading,
  so this is out-of-core surgery (the JSON says which path ran and how the output was verified);
* ``score-bi``, ``score-ppl`` (with ``--verbs``): ``shortllm score --offload --criterion bi|ppl`` on a few
  short windows, layer-by-layer scoring (not part of this script's targets).

Targets: prune peak RSS <= 2 GiB and wall time <= 2x ``cp``. The page cache is shared with the
other processes of the machine; note its size next to the model's (``free -g``) when reading the numbers.
The checkpoint is deleted afterwards unless ``--keep``.

    python benchmarks/big_model.py --verbs prune                      # full 7B shape, ~13.5 GB on disk
    python benchmarks/big_model.py --hidden 256 --intermediate 688 --layers 8 --vocab 1000 --out /dev/null
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine  # noqa: E402

POOL = 16 << 20  # bf16 values in the random pool (32 MB)


def llama_tensors(hidden: int, intermediate: int, layers: int, vocab: int, heads: int,
                  kv_heads: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a LlamaForCausalLM checkpoint (untied head), in save_pretrained's order."""
    kv = hidden // heads * kv_heads
    block = [("input_layernorm.weight", (hidden,)), ("mlp.down_proj.weight", (hidden, intermediate)),
             ("mlp.gate_proj.weight", (intermediate, hidden)), ("mlp.up_proj.weight", (intermediate, hidden)),
             ("post_attention_layernorm.weight", (hidden,)), ("self_attn.k_proj.weight", (kv, hidden)),
             ("self_attn.o_proj.weight", (hidden, hidden)), ("self_attn.q_proj.weight", (hidden, hidden)),
             ("self_attn.v_proj.weight", (kv, hidden))]
    return ([("model.embed_tokens.weight", (vocab, hidden))]
            + [(f"model.layers.{i}.{name}", shape) for i in range(layers) for name, shape in block]
            + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))])


def write_shard(path: Path, tensors: list[tuple[str, tuple[int, ...]]], pool: bytes, rng) -> None:
    """One bf16 safetensors file, written tensor by tensor (header first: the offsets follow from the shapes)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = 2 * math.prod(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, shape in tensors:
            left = 2 * math.prod(shape)
            start = 2 * int(rng.integers(POOL))
            while left:
                piece = pool[start:start + left]
                f.write(piece)
                left -= len(piece)
                start = 0


def copy_tokenizer(folder: Path) -> None:
    """Copy the embedded model's tokenizer files into ``folder`` (the built model has random weights, no text)."""
    from shortllm.models.demo import demo_model_dir

    for path in demo_model_dir().iterdir():
        if path.name.startswith(("tokenizer", "special_tokens_map", "chat_template")):
            shutil.copy2(path, folder / path.name)


def build(folder: Path, args: argparse.Namespace) -> dict:
    """Write config.json, generation_config.json and the sharded weights; returns size facts."""
    import numpy as np
    import torch

    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
              "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
              "num_attention_heads": args.heads, "num_key_value_heads": args.kv_heads, "vocab_size": args.vocab,
              "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16", "hidden_act": "silu"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    pool = (torch.randn(POOL, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    pool_bytes = pool.view(torch.int16).numpy().tobytes() * 2  # twice: any offset has POOL values after it
    rng = np.random.default_rng(0)
    tensors = llama_tensors(args.hidden, args.intermediate, args.layers, args.vocab, args.heads, args.kv_heads)
    cap = args.source_shard_mb * 1e6
    shards, size = [[]], 0
    for name, shape in tensors:
        nbytes = 2 * math.prod(shape)
        if shards[-1] and size + nbytes > cap:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        write_shard(folder / file, shard, pool_bytes, rng)
        weight_map.update((name, file) for name, _ in shard)
    total = sum(2 * math.prod(s) for _, s in tensors)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return {"parameters": total // 2, "bytes": total, "shards": len(shards), "tensors": len(tensors)}


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` then ``sync``; wall seconds (both) and the command's peak RSS."""
    use_time = Path("/usr/bin/time").is_file()
    t = time.perf_counter()
    proc = subprocess.run((["/usr/bin/time", "-v"] if use_time else []) + cmd, capture_output=True, text=True)
    run_s = time.perf_counter() - t
    subprocess.run(["sync"], check=False)
    row = {"cmd": " ".join(cmd), "rc": proc.returncode, "seconds_run": round(run_s, 2),
           "seconds_with_sync": round(time.perf_counter() - t, 2)}
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if peak:
        row["peak_rss_mib"] = round(int(peak.group(1)) / 1024, 1)
    if proc.returncode:
        row["error"] = proc.stderr.split("\tCommand being timed")[0].strip().splitlines()[-5:]
    row["stdout"] = proc.stdout
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to build (needs ~2.8x the model)")
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--blocks", help="blocks to remove (default: 6 blocks ending two before the last)")
    parser.add_argument("--source-shard-mb", type=int, default=5000, help="shard size of the built checkpoint")
    parser.add_argument("--max-shard-size", default="5GB", help="--max-shard-size of the pruned output")
    parser.add_argument("--verbs", default="prune", help="comma-separated: prune, score-bi, score-ppl")
    parser.add_argument("--keep", action="store_true", help="keep the built checkpoint and outputs")
    parser.add_argument("--out", default="benchmarks/results/big_model.json", help="JSON report path")
    args = parser.parse_args()
    verbs = [v.strip() for v in args.verbs.split(",") if v.strip()]
    # Scoring needs text -> tokens: the embedded model's tokenizer travels into the built folder, so the vocabulary
    # must cover its ids.
    tokenizer_vocab = 49152  # SmolLM2's
    if any(v.startswith("score") for v in verbs) and args.vocab < tokenizer_vocab:
        print(f"--vocab {args.vocab} -> {tokenizer_vocab}: the scoring steps use the embedded model's tokenizer",
              file=sys.stderr)
        args.vocab = tokenizer_vocab
    n = min(6, args.layers - 1)
    blocks = args.blocks or ",".join(map(str, range(max(0, args.layers - 2 - n), max(0, args.layers - 2 - n) + n)))
    shortllm = [sys.executable, "-m", "shortllm.cli.app"]

    work = Path(tempfile.mkdtemp(prefix="shortllm-big-", dir=args.dir))
    result = {"benchmark": "big_model", "machine": machine(), "disk": shutil.disk_usage(work)._asdict(),
              "memory_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
              "shape": {k: getattr(args, k) for k in ("hidden", "intermediate", "layers", "vocab", "heads",
                                                       "kv_heads")}, "blocks": blocks, "rows": {}}
    try:
        src = work / "model"
        t = time.perf_counter()
        result["model"] = build(src, args)
        if any(v.startswith("score") for v in verbs):
            copy_tokenizer(src)
        subprocess.run(["sync"], check=False)
        result["build_seconds"] = round(time.perf_counter() - t, 1)
        print(f"built {result['model']['bytes'] / 1e9:.2f} GB in {result['build_seconds']} s", file=sys.stderr)
        if "prune" in verbs:
            row = timed(["cp", "-r", str(src), str(work / "copy")])
            shutil.rmtree(work / "copy", ignore_errors=True)
            result["rows"]["cp"] = row
            print(f"cp: {row['seconds_with_sync']} s, {row.get('peak_rss_mib')} MiB", file=sys.stderr)
            row = timed([*shortllm, "prune", "-m", str(src), "--blocks", blocks, "--out", str(work / "pruned"),
                         "--max-shard-size", args.max_shard_size, "--json"])
            if row["rc"] == 0:
                info = json.loads(row["stdout"])
                row.update(surgery=info["surgery"], written=info["written"], timings_s=info["timings_s"],
                           params_after=info["params_after"])
            result["rows"]["prune"] = row
            print(f"prune: {row['seconds_with_sync']} s, {row.get('peak_rss_mib')} MiB", file=sys.stderr)
            shutil.rmtree(work / "pruned", ignore_errors=True)
        for verb in verbs:
            if verb.startswith("score-"):  # layer-by-layer scoring (score --offload), added by its own change
                row = timed([*shortllm, "score", "-m", str(src), "--offload", "--criterion", verb[6:],
                             "--samples", "2", "--seq-len", "64", "--device", "cpu", "--out", str(work / verb),
                             "--json"])
                result["rows"][verb] = row
                print(f"{verb}: rc {row['rc']}, {row['seconds_with_sync']} s, {row.get('peak_rss_mib')} MiB",
                      file=sys.stderr)
        for row in result["rows"].values():
            row.pop("stdout", None)
        if "prune" in result["rows"] and "cp" in result["rows"]:
            prune, cp = result["rows"]["prune"], result["rows"]["cp"]
            result["prune_vs_cp"] = round(prune["seconds_with_sync"] / cp["seconds_with_sync"], 2)
            result["targets"] = {"prune_peak_rss_le_2gib": prune.get("peak_rss_mib", math.inf) <= 2048,
                                 "prune_time_le_2x_cp": result["prune_vs_cp"] <= 2}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            result["kept"] = str(work)
    emit(result, None if args.out == "/dev/null" else args.out)


if __name__ == "__main__":
    main()
