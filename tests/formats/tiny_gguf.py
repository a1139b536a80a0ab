"""Tiny GGUF files built with the ``gguf`` package itself, for the GGUF writer's tests.

Each file has the tensor names llama.cpp expects for its architecture (``gguf.MODEL_TENSORS``), quantized
weights, per-block metadata arrays and tokenizer metadata. Types: Q8_0 and Q4_0 come from gguf-py's own
quantizer (``gguf.quants.quantize``); gguf-py cannot quantize the K-quants (it only dequantizes them), so the
Q4_K tensors are built block by block (finite f16 scales, random 6-bit sub-scales and 4-bit values) and checked
with ``gguf.quants.dequantize``. Norms are F32, embeddings F16.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

HIDDEN, FFN, VOCAB = 256, 256, 64  # K-quants need rows of 256 values


def q4_k_bytes(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Valid Q4_K data for a (rows, cols) matrix, as gguf stores it: uint8 of shape (rows, cols / 256 * 144)."""
    n = rows * cols // 256
    blocks = np.zeros((n, 144), dtype=np.uint8)
    blocks[:, 0:2] = np.frombuffer(np.full(n, 0.01, np.float16).tobytes(), np.uint8).reshape(n, 2)  # d
    blocks[:, 2:4] = np.frombuffer(np.full(n, 0.005, np.float16).tobytes(), np.uint8).reshape(n, 2)  # dmin
    blocks[:, 4:] = rng.integers(0, 256, size=(n, 140), dtype=np.uint8)  # scales/mins and 4-bit values
    data = blocks.reshape(rows, cols // 256 * 144)
    assert np.isfinite(gguf.quants.dequantize(data, Q.Q4_K)).all()
    return data


def _weight(writer: gguf.GGUFWriter, name: str, shape: tuple[int, int], qtype: Q, rng: np.random.Generator) -> None:
    rows, cols = shape  # numpy order: (out, in); gguf stores ne = (in, out)
    if qtype == Q.Q4_K:
        writer.add_tensor(name, q4_k_bytes(rows, cols, rng), raw_dtype=Q.Q4_K)
    elif qtype == Q.F16:
        writer.add_tensor(name, rng.standard_normal(shape).astype(np.float16))
    else:
        data = rng.standard_normal(shape).astype(np.float32) * 0.05
        writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


def write_tiny_gguf(path: Path, arch: str = "llama", num_blocks: int = 4, seed: int = 0,
                    extra: dict | None = None, tensor_blocks: int | None = None, skip: tuple[str, ...] = (),
                    head_count: list[int] | None = None, extra_tensors: dict | None = None) -> Path:
    """Write a tiny ``arch`` GGUF (llama, qwen2 or gemma3) with ``num_blocks`` blocks to ``path``.

    Attention weights are Q8_0 (Q4_0 for qwen2's), feed-forward weights Q4_K, norms and biases F32. The head
    counts and feed-forward lengths are stored per block (arrays that differ from block to block, so filtering
    is visible). ``extra``: more metadata, ``{key: value}`` (ints as uint32, lists as arrays). A damaged file for
    the refusals: ``tensor_blocks`` writes tensors for only that many blocks, ``skip`` leaves those tensors out.
    ``head_count``: the per-block head counts (default 4 each); ``extra_tensors``: more F32 tensors by name.
    """
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch)
    if skip:
        add = writer.add_tensor
        writer.add_tensor = lambda name, *a, **k: None if name in skip else add(name, *a, **k)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(num_blocks)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length([FFN] * num_blocks)
    writer.add_head_count(head_count or [4] * num_blocks)
    writer.add_head_count_kv([1 + i % 2 for i in range(num_blocks)])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        writer.add_sliding_window(8)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    writer.add_token_types([1] * VOCAB)
    writer.add_token_merges(["t 1", "t 2"])
    writer.add_bos_token_id(1)
    writer.add_chat_template("{{ messages }}")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, value in (extra or {}).items():
        if isinstance(value, list):
            writer.add_array(key, value)
        else:
            writer.add_uint32(key, value)

    head, kv = HIDDEN // 4, HIDDEN // 4
    attn_type = Q.Q4_0 if arch == "qwen2" else Q.Q8_0
    writer.add_tensor("token_embd.weight", rng.standard_normal((VOCAB, HIDDEN)).astype(np.float16))
    for i in range(num_blocks if tensor_blocks is None else tensor_blocks):
        kv_heads = 1 + i % 2
        _weight(writer, f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), attn_type, rng)
        _weight(writer, f"blk.{i}.attn_k.weight", (kv * kv_heads, HIDDEN), attn_type, rng)
        _weight(writer, f"blk.{i}.attn_v.weight", (kv * kv_heads, HIDDEN), attn_type, rng)
        _weight(writer, f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), attn_type, rng)
        if arch == "qwen2":
            for part, size in (("q", HIDDEN), ("k", kv * kv_heads), ("v", kv * kv_heads)):
                writer.add_tensor(f"blk.{i}.attn_{part}.bias", rng.standard_normal(size).astype(np.float32))
        if arch == "gemma3":
            for norm in ("attn_q_norm", "attn_k_norm"):
                writer.add_tensor(f"blk.{i}.{norm}.weight", rng.standard_normal(head).astype(np.float32))
            for norm in ("post_attention_norm", "post_ffw_norm"):
                writer.add_tensor(f"blk.{i}.{norm}.weight", rng.standard_normal(HIDDEN).astype(np.float32))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", rng.standard_normal(HIDDEN).astype(np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", rng.standard_normal(HIDDEN).astype(np.float32))
        _weight(writer, f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), Q.Q4_K, rng)
        _weight(writer, f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), Q.Q4_K, rng)
        _weight(writer, f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), Q.Q4_K, rng)
    for name, value in (extra_tensors or {}).items():
        writer.add_tensor(name, np.asarray(value, dtype=np.float32))
    writer.add_tensor("output_norm.weight", rng.standard_normal(HIDDEN).astype(np.float32))
    if arch != "gemma3":  # gemma3 ties the head to the embedding
        _weight(writer, "output.weight", (VOCAB, HIDDEN), Q.Q8_0, rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders q/k rows for its RoPE layout (``LlamaModel.permute``); transformers'
    GGUF loader undoes it, so an HF model written this way loads back to the same weights."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_llama_to_gguf(hf_dir: Path, path: Path, qtype: Q = Q.Q8_0) -> Path:
    """Write a small HF llama folder (with a byte-level BPE tokenizer) as a GGUF that llama.cpp and transformers
    both read: 2-D block weights quantized to ``qtype`` with gguf-py's quantizer, the rest F32; tokenizer as
    ``gpt2`` tokens and merges. Test-only stand-in for llama.cpp's ``convert_hf_to_gguf.py``."""
    import json

    from safetensors.numpy import load_file

    config = json.loads((hf_dir / "config.json").read_text())
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    n, heads, kv_heads = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    weights = load_file(hf_dir / "model.safetensors")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(n)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(float(config.get("rope_theta") or config.get("rope_parameters", {}).get(
        "rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([3 if t in special else 1 for t, _ in vocab])
    merges = tok["model"]["merges"]
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for hf_name, w in weights.items():
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        if hf_name.endswith("q_proj.weight"):
            w = _permute(w, heads)
        elif hf_name.endswith("k_proj.weight"):
            w = _permute(w, kv_heads)
        w = w.astype(np.float32)
        if w.ndim == 2 and name != "token_embd.weight":
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
