"""Safetensors read and written tensor by tensor (``models/checkpoint.py``): headers, renaming, streaming
shards, and the verification of what was written."""

import json
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from shortllm.errors import ModelLoadError, OutputError, ShortLLMError
from shortllm.models.checkpoint import (INDEX_NAME, WEIGHTS_NAME, block_prefix, list_tensors, parse_size,
                                        plan_shards, read_header, rename_blocks, verify_checkpoint, weight_files,
                                        write_checkpoint)


@pytest.fixture
def tensors():
    """Every kind of tensor a checkpoint holds: several dtypes, a scalar, an empty one, odd byte lengths."""
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(7, 5, generator=g),
        "model.layers.0.w": torch.randn(3, 3, generator=g).to(torch.bfloat16),
        "model.layers.1.w": torch.randn(3, 3, generator=g).to(torch.float16),
        "model.layers.1.scale": torch.tensor(2.5),
        "model.layers.2.idx": torch.arange(5, dtype=torch.int64),
        "model.layers.2.mask": torch.tensor([True, False, True]),
        "model.layers.2.empty": torch.zeros(0, 4),
        "model.norm.weight": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "lm_head.weight": torch.randint(-8, 8, (3,), generator=g, dtype=torch.int8),
    }


def test_copy_is_bit_identical_and_library_readable(tensors, tmp_path):
    save_file(tensors, tmp_path / "src.safetensors", metadata={"format": "pt"})
    entries = read_header(tmp_path / "src.safetensors")
    assert entries["model.layers.0.w"].dtype == "BF16" and entries["model.layers.2.empty"].nbytes == 0
    (tmp_path / "out").mkdir()
    weight_map = write_checkpoint(tmp_path / "out", [(f"x.{k}", e) for k, e in entries.items()], "1GB")
    assert set(weight_map.values()) == {WEIGHTS_NAME}
    loaded = load_file(tmp_path / "out" / WEIGHTS_NAME)
    assert loaded.keys() == {f"x.{k}" for k in tensors}
    for name, tensor in tensors.items():
        got = loaded[f"x.{name}"]
        assert got.dtype == tensor.dtype and got.shape == tensor.shape
        assert torch.equal(got.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))
    with open(tmp_path / "out" / WEIGHTS_NAME, "rb") as f:
        assert struct.unpack("<Q", f.read(8))[0] % 8 == 0  # data 8-byte aligned, as the library writes it
    with safe_open(str(tmp_path / "out" / WEIGHTS_NAME), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_shards_and_index(tensors, tmp_path):
    save_file(tensors, tmp_path / "src.safetensors")
    entries = list(read_header(tmp_path / "src.safetensors").items())
    (tmp_path / "out").mkdir()
    weight_map = write_checkpoint(tmp_path / "out", entries, 100, total_parameters=123)
    index = json.loads((tmp_path / "out" / INDEX_NAME).read_text())
    shards = sorted(set(weight_map.values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["weight_map"] == weight_map and index["metadata"] == {
        "total_size": sum(e.nbytes for _, e in entries), "total_parameters": 123}
    for shard in shards:  # no shard over the cap unless it holds one tensor larger than the cap
        held = [n for n, s in weight_map.items() if s == shard]
        assert len(held) == 1 or sum(tensors[n].nbytes for n in held) <= 100
    assert list_tensors(tmp_path / "out").keys() == tensors.keys()
    assert verify_checkpoint(tmp_path / "out", {n: (e.dtype, e.shape) for n, e in entries}) == len(tensors)


def test_plan_shards_keeps_order_and_isolates_big_tensors(tensors, tmp_path):
    save_file(tensors, tmp_path / "s.safetensors")
    entries = list(read_header(tmp_path / "s.safetensors").items())
    shards = plan_shards(entries, 40)
    assert [n for shard in shards for n, _ in shard] == [n for n, _ in entries]
    assert all(len(s) == 1 or sum(e.nbytes for _, e in s) <= 40 for s in shards)
    assert len(plan_shards(entries, 10**9)) == 1


def test_verify_names_every_problem(tensors, tmp_path):
    save_file(tensors, tmp_path / WEIGHTS_NAME)
    expected = {n: (e.dtype, e.shape) for n, e in read_header(tmp_path / WEIGHTS_NAME).items()}
    wrong = dict(expected)
    wrong["model.norm.weight"] = ("F32", (5,))
    del wrong["lm_head.weight"]
    wrong["model.layers.3.w"] = ("F32", (1,))
    with pytest.raises(ShortLLMError) as err:
        verify_checkpoint(tmp_path, wrong)
    message = str(err.value)
    assert "model.norm.weight is F8_E4M3[5], expected F32[5]" in message
    assert "lm_head.weight should not be there" in message and "model.layers.3.w is missing" in message


def test_verify_refuses_a_tensor_in_two_shards(tensors, tmp_path):
    save_file({"a": tensors["model.embed_tokens.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"a": tensors["model.embed_tokens.weight"]}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"},
                                                   "metadata": {}}))
    with pytest.raises(ShortLLMError, match="a is in both"):
        verify_checkpoint(tmp_path, {"a": ("F32", (7, 5))})


def test_block_prefix_from_the_table_or_the_bare_base_model():
    llama = ["model.embed_tokens.weight", *(f"model.layers.{i}.mlp.w" for i in range(3)), "lm_head.weight",
             *(f"model.layers.{i}.mlp.experts.{e}.w" for i in range(3) for e in range(4))]
    assert block_prefix(llama, ["model.layers", "layers"], 3) == "model.layers"
    gpt2 = ["wte.weight", *(f"h.{i}.attn.c_attn.weight" for i in range(2))]
    assert block_prefix(gpt2, ["transformer.h", "h"], 2) == "h"
    llava = [f"language_model.model.layers.{i}.w" for i in range(2)]  # an older nesting, same tail
    assert block_prefix(llava, ["model.language_model.layers", "language_model.layers"], 2) == (
        "language_model.model.layers")
    assert block_prefix(llama, ["model.layers"], 4) is None  # block 3 missing: not this checkpoint
    assert block_prefix(gpt2, ["model.layers"], 2) is None


def test_rename_blocks_drops_and_renumbers():
    names = ["model.embed_tokens.weight", "model.layers.0.w", "model.layers.1.w", "model.layers.2.w",
             "model.layers.10.w", "model.layers.3.w", "model.norm.weight", "model.layers.4.w"]
    renamed = rename_blocks(names, "model.layers", [0, 2, 10])
    assert renamed == {"model.embed_tokens.weight": "model.embed_tokens.weight",
                       "model.layers.0.w": "model.layers.0.w", "model.layers.2.w": "model.layers.1.w",
                       "model.layers.10.w": "model.layers.2.w", "model.norm.weight": "model.norm.weight"}


def test_folders_without_safetensors_or_with_a_broken_index(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    assert weight_files(tmp_path) is None and list_tensors(tmp_path) is None
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ModelLoadError, match="names missing shard"):
        weight_files(tmp_path)
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        list_tensors(tmp_path)


@pytest.mark.parametrize("size, expected", [("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("20KB", 20000),
                                            (1234, 1234)])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["lots", "0", "-5GB"])
def test_parse_size_refuses(size):
    with pytest.raises(OutputError, match="shard size"):
        parse_size(size)
