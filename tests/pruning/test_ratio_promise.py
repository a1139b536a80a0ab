"""The ratio promise, as a property: ``--ratio r`` never removes more than r x the parameters.

It must hold for every criterion, contiguous ones included, whatever the block sizes: MoE and dense blocks
mixed, a first dense block, shared experts. Each criterion scores a tiny model once; its report then plans
removals for random block-size vectors with the very function ``prune`` and ``score`` use.
"""

from __future__ import annotations

import random

import pytest

from shortllm.errors import BlockSelectionError
from shortllm.models.loading import LoadSettings, load_model
from shortllm.models.params import ParamCount
from shortllm.pruning.plan import blocks_within_ratio, fit_within_ratio, fits_ratio, smallest_first
from shortllm.scoring import registry

from shortllm.scoring.run import Calibration, ScoreOptions, protected_blocks, removal_from_report, score_loaded
from tests.training.helpers import make_tiny_model_with_tokenizer

NUM_BLOCKS = 8


def _criteria() -> list[str]:
    return registry.criterion_names()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    path = make_tiny_model_with_tokenizer(tmp_path_factory.mktemp("ratio") / "tiny", num_layers=NUM_BLOCKS)
    loaded = load_model(str(path), LoadSettings(device="cpu", dtype="float32"))
    found = {}
    for name in _criteria():
        criterion = registry.get_criterion(name)
        protected = protected_blocks(criterion, NUM_BLOCKS, None, None)
        options = ScoreOptions(criterion=name, calibration=Calibration(samples=2, seq_len=16))
        found[name] = score_loaded(loaded, options, min(NUM_BLOCKS - 1, NUM_BLOCKS - len(protected)))
    return found


def _sizes(rng: random.Random) -> list[int]:
    kind = rng.choice(["uniform", "moe-mixed", "first-dense", "shared-experts", "random"])
    dense, moe = rng.randint(1_000, 5_000), rng.randint(5_000, 40_000)
    if kind == "uniform":
        return [dense] * NUM_BLOCKS
    if kind == "moe-mixed":  # e.g. decoder_sparse_step 2 or mlp_only_layers
        return [rng.choice([dense, moe]) for _ in range(NUM_BLOCKS)]
    if kind == "first-dense":  # first_k_dense_replace
        k = rng.randint(1, 3)
        return [dense] * k + [moe] * (NUM_BLOCKS - k)
    if kind == "shared-experts":
        shared = rng.randint(500, 3_000)
        return [moe + (shared if rng.random() < 0.5 else 0) for _ in range(NUM_BLOCKS)]
    return [rng.randint(100, 50_000) for _ in range(NUM_BLOCKS)]


def _counts(sizes: list[int], rng: random.Random) -> ParamCount:
    embeddings = rng.randint(0, sum(sizes))
    return ParamCount(total=sum(sizes) + embeddings + 64, per_block=sizes, embeddings=embeddings, head=0, other=64)


def test_every_criterion_is_scored(reports):
    assert {"ppl", "taylor", "taylor+", "magnitude", "bi", "angular", "sleb", "chop"} <= set(reports)


@pytest.mark.parametrize("criterion", _criteria())
def test_never_more_than_asked(reports, criterion):
    report = reports[criterion]
    rng = random.Random(f"ratio-{criterion}")

    def choose(m):
        return removal_from_report(report, m)

    planned = 0
    for _ in range(300):
        counts = _counts(_sizes(rng), rng)
        ratio = rng.uniform(0.01, 0.95)
        k_max = min(blocks_within_ratio(counts, ratio, smallest_first(counts)), report["num_remove"])
        try:
            removed = fit_within_ratio(counts, ratio, choose, k_max)
        except BlockSelectionError:
            # Refused only when no set the criterion would choose fits at all.
            for m in range(1, k_max + 1):
                try:
                    assert not fits_ratio(counts, ratio, choose(m))
                except BlockSelectionError:
                    pass
            continue
        planned += 1
        removed_params = sum(counts.per_block[i] for i in removed)
        assert removed_params <= ratio * counts.total * (1 + 1e-12)
        assert set(removed).isdisjoint(report["protected"])
        if report["contiguous"]:
            assert removed == list(range(removed[0], removed[0] + len(removed)))
        # The largest fitting choice: the criterion's next size up does not fit (or does not exist).
        if len(removed) < k_max:
            try:
                bigger = choose(len(removed) + 1)
            except BlockSelectionError:
                bigger = None
            assert bigger is None or not fits_ratio(counts, ratio, bigger)
    assert planned > 100


def test_prune_with_unequal_blocks_end_to_end(tmp_path):
    # A DeepSeek-style model: blocks 0-1 dense, 2-3 MoE (bigger). chop removes from the end, where the big
    # blocks are; a ratio that fits one dense block but not one MoE block must not remove an MoE block.
    from shortllm.models.loading import load_skeleton
    from shortllm.models.params import count_params
    from shortllm.pruning.run import PruneRequest, prune
    from tests.tiny_models import tiny_model

    tiny_model("deepseek_v3", 4).save_pretrained(tmp_path / "ds")
    counts = count_params(load_skeleton(str(tmp_path / "ds"))[0])
    dense, moe = counts.per_block[0], counts.per_block[2]
    assert counts.per_block[1] == dense and moe > dense
    ratio = (dense + (moe - dense) / 2) / counts.total
    def request(criterion):
        return PruneRequest(model=str(tmp_path / "ds"), out=None, ratio=ratio, dry_run=True,
                            scoring=ScoreOptions(criterion=criterion, protect_first=0, protect_last=0),
                            settings=LoadSettings(device="cpu"))

    result = prune(request("magnitude"))
    assert result.plan.params_before - result.plan.params_after <= ratio * counts.total
    assert result.plan.removed and all(counts.per_block[i] == dense for i in result.plan.removed)
    # chop can only cut the run before the last block, where the MoE blocks are: it must refuse, not exceed.
    with pytest.raises(BlockSelectionError, match="too small for any block criterion chop would remove"):
        prune(request("chop"))
