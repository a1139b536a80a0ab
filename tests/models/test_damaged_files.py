"""Every kind of damaged weight file is refused in one line that names the file, on every path that reads it."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from safetensors import safe_open

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import run_cli, tree_digest


def _truncate(folder):
    path = folder / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return "model.safetensors is truncated: its header lists"


def _empty(folder):
    (folder / "model.safetensors").write_bytes(b"")
    return "model.safetensors is empty (0 bytes)"


def _bad_header(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:20] = b"not json at "
    (folder / "model.safetensors").write_bytes(bytes(data))
    return "model.safetensors is not a readable safetensors file"


def _lfs_pointer(folder):
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    return "model.safetensors is not a safetensors file (its first 8 bytes give a header of"


def _missing_shard(folder):
    first = folder / "model-00001-of-00002.safetensors"
    (folder / "model.safetensors").rename(first)
    with safe_open(first, "pt") as f:
        names = list(f.keys())
    weight_map = {n: first.name if i % 2 else "model-00002-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return "model.safetensors.index.json names missing shard(s): model-00002-of-00002.safetensors"


@pytest.mark.parametrize("damage", [_truncate, _empty, _bad_header, _lfs_pointer, _missing_shard],
                         ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("verb", [["prune", "-b", "1"], ["prune", "--num-blocks", "1", "-c", "magnitude"],
                                  ["score", "-c", "magnitude"]], ids=" ".join)
def test_damaged_weights_are_named(tiny_llama_dir, tmp_path, damage, verb):
    src = tmp_path / "src"
    shutil.copytree(tiny_llama_dir, src)
    needle = damage(src)
    before = tree_digest(src)
    result = run_cli(*verb, "-m", src, "--out", tmp_path / "o")
    assert_one_line_error(result, str(src / needle.split(" ")[0]), needle)
    assert tree_digest(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
