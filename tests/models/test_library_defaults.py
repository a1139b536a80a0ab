"""The loading door sets the library defaults that change what is computed: Hub kernels off unless asked
(transformers 5.25 turns them on and they cannot be applied on the meta device), the stock attention, the
dtype the user asked for."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from shortllm.errors import DeviceError
from shortllm.models.loading import LoadSettings, from_pretrained_strict, load_model
from tests.conftest import run_cli

HAS_KERNELS = importlib.util.find_spec("kernels") is not None


@pytest.fixture
def hub_kernels_default(monkeypatch):
    """The environment of a fresh machine: nothing switches Hub kernels off."""
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)


class _Recorder:
    """A model class that records what ``from_pretrained`` was given."""

    seen: dict = {}

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        cls.seen = kwargs
        return object(), {}


@pytest.mark.parametrize(("kernels", "device_map", "expected"),
                         [(False, None, False), (True, None, True), (True, "meta", False), (False, "meta", False)])
def test_use_kernels_is_always_passed(kernels, device_map, expected):
    kwargs = {"device_map": device_map} if device_map else {}
    from_pretrained_strict("unused", "unused", _Recorder, kernels=kernels, **kwargs)
    assert _Recorder.seen["use_kernels"] is expected


def test_use_kernels_cannot_bypass_the_door():
    with pytest.raises(TypeError, match="kernels="):
        from_pretrained_strict("unused", "unused", _Recorder, use_kernels=True)


def test_meta_device_load_with_hub_kernels_on_by_default(hub_kernels_default, tiny_llama_dir):
    # transformers 5.25 + kernels: a plain from_pretrained onto the meta device raised
    # "ValueError: Unsupported device type 'meta'" from kernelize.
    model = from_pretrained_strict(str(tiny_llama_dir), "tiny", device_map="meta")
    assert next(model.parameters()).device.type == "meta"
    assert not getattr(model, "use_kernels", False)


def test_loaded_models_are_not_kernelized(monkeypatch, tiny_llama_dir):
    monkeypatch.setenv("USE_HUB_KERNELS", "1")  # even when the environment asks for them
    loaded = load_model(str(tiny_llama_dir), LoadSettings(dtype="float32", device="cpu"))
    assert not getattr(loaded.model, "use_kernels", False)
    assert loaded.model.dtype == torch.float32
    # The stock attention: the library's default resolution (sdpa where the class has it), never a Hub kernel.
    assert loaded.model.config._attn_implementation in ("sdpa", "eager")


def test_kernels_opt_in(hub_kernels_default, tiny_llama_dir):
    settings = LoadSettings(dtype="float32", device="cpu", kernels=True)
    if not HAS_KERNELS:
        with pytest.raises(DeviceError, match="needs the 'kernels' package"):
            load_model(str(tiny_llama_dir), settings)
        return
    plain = load_model(str(tiny_llama_dir), LoadSettings(dtype="float32", device="cpu")).model
    kernelized = load_model(str(tiny_llama_dir), settings).model
    assert kernelized.use_kernels is True
    ids = torch.arange(1, 9).unsqueeze(0)
    with torch.no_grad():  # on a CPU without Hub kernels for these layers, the stock modules still run
        torch.testing.assert_close(kernelized(ids).logits, plain(ids).logits, rtol=0, atol=1e-5)


def test_kernels_refused_when_the_environment_switches_them_off(monkeypatch, tiny_llama_dir, tmp_path):
    monkeypatch.setenv("USE_HUB_KERNELS", "0")
    result = run_cli("score", "-m", tiny_llama_dir, "-c", "bi", "--kernels", "--out", tmp_path / "s")
    assert result.exit_code == 2
    assert "USE_HUB_KERNELS=0" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_kernels_refused_without_the_package(monkeypatch, hub_kernels_default, tiny_llama_dir, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kernels" else real(name, *a))
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1", "--kernels", "--out", tmp_path / "p")
    assert result.exit_code == 2
    assert "pip install kernels" in result.stderr
    assert not (tmp_path / "p").exists()


def test_out_of_core_prune_on_a_fresh_machine(hub_kernels_default, tiny_llama_dir, tmp_path):
    # The path of `shortllm prune --blocks 20,21 --out p/`: the meta-device coverage check, then the copy.
    result = run_cli("prune", "-m", tiny_llama_dir, "--blocks", "1,2", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.stderr
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "p").config.num_hidden_layers == 2


def test_the_embedded_tokenizer_adds_no_special_tokens(demo_dir):
    """Pinned: eval's default ``--ppl-bos tokenizer`` and lm-eval's ``add_bos_token=None`` leave BOS to the
    tokenizer, and the published perplexities of the embedded model were measured with none added. A release
    that changes the tokenizer's default would change them: this test says so first."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_dir)
    text = "The tower is 324 metres tall."
    assert tokenizer(text).input_ids == tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer(text).input_ids[0] != tokenizer.bos_token_id
