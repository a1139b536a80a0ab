"""Benchmark: a GGUF pruned by shortllm, run by llama.cpp itself, beside shortllm's numbers for the same models.

Prunes a GGUF (default: the embedded SmolLM2-135M-Instruct Q4_1) with ``shortllm prune --out pruned.gguf`` (kept
tensors are the source's quantized bytes), then for the original and the pruned file:

- llama.cpp (through ``llama-cpp-python``): greedy generation of a chat prompt, and perplexity on a WikiText-2
  test slice (windows of ``--ctx`` tokens, every token after the first of a window predicted, as
  ``llama-perplexity`` minus its half-window warm-up);
- shortllm: the same token windows through the dequantized model (shortllm's own GGUF loading path,
  float32 weights), so the two runtimes' perplexities sit side by side.

Not a CI test: it needs ``llama-cpp-python``, which compiles llama.cpp for several minutes on install:

    pip install "llama-cpp-python>=0.3.16"   # 0.3.36 on PyPI now; CPU build (CMAKE_ARGS="-DGGML_CUDA=on" for CUDA)

Usage:
    python benchmarks/gguf_llamacpp.py [--gguf model.gguf] [--blocks 12-18 | --ratio 0.2] [--windows 20]
        [--ctx 512] [--data-dir ../shared/data] [--out benchmarks/results/gguf_llamacpp.json]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, machine  # noqa: E402

PROMPT = "What is the capital of France? Answer in one sentence."


def shortllm(*args: str) -> None:
    """Run the shortllm CLI installed beside this Python."""
    exe = Path(sys.executable).with_name("shortllm")
    cmd = [str(exe) if exe.exists() else "shortllm", *args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def wikitext_text(data_dir: Path, chars: int) -> str:
    """The first ``chars`` characters of WikiText-2 raw test (the offline copy's layout)."""
    text = (data_dir / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    return text[:chars]


def windows_of(tokens: list[int], ctx: int, count: int, bos: int | None) -> list[list[int]]:
    """Consecutive non-overlapping windows of ``ctx`` tokens (a BOS first when the model has one)."""
    body = ctx - (1 if bos is not None else 0)
    out = []
    for start in range(0, len(tokens) - body + 1, body):
        out.append(([bos] if bos is not None else []) + tokens[start:start + body])
        if len(out) == count:
            break
    return out


def nll_sum(logits: np.ndarray, window: list[int]) -> tuple[float, int]:
    """Sum of -log p(token t+1 | ..t) over a window, from per-position logits (n, vocab)."""
    logits = logits[:-1].astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    logz = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
    targets = np.array(window[1:])
    return float((logz - logits[np.arange(len(targets)), targets]).sum()), len(targets)


def llama_cpp_side(path: Path, wins: list[list[int]], ctx: int, threads: int, new_tokens: int) -> dict:
    """Load ``path`` with llama.cpp, generate greedily, and measure perplexity over ``wins``."""
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=threads, seed=0,
                verbose=False)
    load_s = time.perf_counter() - t0
    chat = llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], temperature=0.0, top_k=1,
                                      max_tokens=new_tokens)
    total, count = 0.0, 0
    t1 = time.perf_counter()
    for win in wins:
        llm.reset()
        llm.eval(win)
        s, n = nll_sum(np.array(llm.scores[: len(win)]), win)
        total, count = total + s, count + n
    return {"load_s": round(load_s, 2), "ppl": math.exp(total / count), "tokens": count,
            "ppl_s": round(time.perf_counter() - t1, 2), "greedy": chat["choices"][0]["message"]["content"],
            "n_layer": llm.metadata.get(f"{llm.metadata.get('general.architecture')}.block_count")}


def shortllm_side(path: Path, wins: list[list[int]]) -> dict:
    """The same windows through shortllm's dequantized model (float32)."""
    import torch

    from shortllm.models.loading import load_model

    t0 = time.perf_counter()
    loaded = load_model(str(path))
    model = loaded.model
    total, count = 0.0, 0
    with torch.no_grad():
        for win in wins:
            logits = model(torch.tensor([win]), use_cache=False).logits[0].float().numpy()
            s, n = nll_sum(logits, win)
            total, count = total + s, count + n
    ids = loaded.tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=32, do_sample=False)
    text = loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    return {"ppl": math.exp(total / count), "tokens": count, "s": round(time.perf_counter() - t0, 2),
            "greedy": text, "n_layer": model.config.num_hidden_layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="source GGUF (default: the embedded model's)")
    parser.add_argument("--blocks", default="12-18", help="blocks to remove (default 12-18: 7 of 30, ~18%%, the angular "
                        "criterion's choice on the embedded model, benchmarks/results/criteria_quality.json)")
    parser.add_argument("--ratio", type=float, default=None, help="prune by ratio (ppl criterion) instead")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("SHORTLLM_DATA_DIR") or "../shared/data"))
    parser.add_argument("--out", default="benchmarks/results/gguf_llamacpp.json")
    args = parser.parse_args()

    try:  # fail early, before the prune, when llama-cpp-python is missing
        from llama_cpp import Llama
    except ImportError:
        sys.exit('this benchmark runs llama.cpp through llama-cpp-python: pip install "llama-cpp-python>=0.3.16"')

    if args.gguf is None:
        from shortllm.models.demo import find_demo_gguf

        args.gguf = find_demo_gguf()
    work = Path(tempfile.mkdtemp(prefix="gguf-llamacpp-"))
    pruned = work / "pruned.gguf"
    how = ["--ratio", str(args.ratio)] if args.ratio is not None else ["--blocks", args.blocks]
    t0 = time.perf_counter()
    keep = ["--keep-attention-pattern"] if args.ratio is not None else []
    shortllm("prune", "-m", str(args.gguf), *how, *keep, "--out", str(pruned))
    prune_s = time.perf_counter() - t0

    vocab_only = Llama(model_path=str(args.gguf), vocab_only=True, verbose=False)
    tokens = vocab_only.tokenize(wikitext_text(args.data_dir, 400_000).encode(), add_bos=False)
    bos = vocab_only.token_bos() if vocab_only.metadata.get("tokenizer.ggml.add_bos_token") == "true" else None
    wins = windows_of(tokens, args.ctx, args.windows, bos)
    result = {"benchmark": "gguf_llamacpp", "machine": machine(), "source": str(args.gguf),
              "prune": {"how": how, "seconds": round(prune_s, 2), "size_bytes": {
                  "original": args.gguf.stat().st_size, "pruned": pruned.stat().st_size}},
              "eval": {"data": "wikitext-2-raw test, first windows", "windows": len(wins), "ctx": args.ctx},
              "models": {}}
    for name, path in (("original", args.gguf), ("pruned", pruned)):
        result["models"][name] = {"llama_cpp": llama_cpp_side(path, wins, args.ctx, args.threads, args.new_tokens),
                                  "shortllm_dequantized": shortllm_side(path, wins)}
    emit(result, args.out)


if __name__ == "__main__":
    main()
