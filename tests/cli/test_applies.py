"""An option the run would not read is refused in one line before anything loads, never silently ignored
(cli/applies.py); options left at their defaults, the ones that apply, and every shipped recipe still pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from shortllm.cli import applies
from shortllm.pipeline.verbs import command
from tests.cli.test_one_line import assert_refused_at_once, env  # noqa: F401  (env: the fixture)

# (argv, the start of the one line after "error: "); each was accepted and ignored before.
CASES = [
    (["score", "-c", "ppl", "--norm", "1"], "--norm only applies with --criterion magnitude, taylor, taylor+ or "
     "auto, not ppl. Drop --norm."),
    (["score", "-c", "bi", "--refine", "2"], "--refine only applies with --criterion auto."),
    (["score", "-c", "taylor", "--search-sleb"], "--search-sleb only applies with --criterion auto."),
    (["score", "-c", "ppl", "--no-sleb-barriers"], "--no-sleb-barriers only applies with --criterion sleb."),
    (["score", "-c", "magnitude", "--samples", "5"], "--samples only applies to criteria that read calibration "
     "text, not magnitude."),
    (["score", "-c", "chop", "--data", "c4"], "--data only applies to criteria that read calibration text, not chop."),
    (["prune", "--blocks", "3", "-c", "bi", "--out", "o"], "--criterion only applies when prune scores the blocks"),
    (["prune", "--blocks", "3", "--protect-first", "2", "--out", "o"], "--protect-first only applies when prune "
     "scores"),
    (["prune", "--blocks", "3", "--samples", "20", "--out", "o"], "--samples only applies when prune scores the "
     "blocks (--ratio or --num-blocks without --scores) (--replace fits on --replace-samples windows)"),
    (["prune", "--blocks", "3", "--replace", "linear", "--samples", "20", "--out", "o"], "--samples only applies "
     "when prune scores"),
    (["prune", "--ratio", "0.2", "-c", "magnitude", "--samples", "20", "--out", "o"], "--samples only applies to "
     "criteria that read calibration text, not magnitude"),
    (["prune", "--ratio", "0.2", "-c", "ppl", "--norm", "2", "--out", "o"], "--norm only applies with --criterion"),
    (["prune", "--blocks", "3", "-c", "taylor", "--norm", "2", "--out", "o"], "--criterion only applies when prune "
     "scores"),
    (["prune", "--ratio", "0.2", "-c", "ppl", "--search-tokens", "2048", "--out", "o"], "--search-tokens only "
     "applies with --criterion auto."),
    (["prune", "--num-blocks", "2", "-c", "bi", "--no-sleb-barriers", "--out", "o"], "--no-sleb-barriers only "
     "applies with --criterion sleb."),
    (["prune", "--blocks", "3", "--data", "c4", "--out", "o"], "--data only applies to scoring with a criterion "
     "that reads calibration text, or to --replace's fit"),
    (["prune", "--ratio", "0.2", "-c", "chop", "--seq-len", "64", "--out", "o"], "--seq-len only applies to "
     "scoring with a criterion"),
    (["prune", "--blocks", "3", "--replace-samples", "8", "--out", "o"], "--replace-samples only applies with "
     "--replace."),
    (["prune", "--blocks", "3", "--replace", "block", "--replace-ridge", "0.1", "--out", "o"], "--replace-ridge "
     "only applies with --replace linear."),
    (["prune", "--blocks", "3", "--replace", "linear", "--replace-epochs", "2", "--out", "o"], "--replace-epochs "
     "only applies with --replace block."),
    (["prune", "--blocks", "3", "--replace-init", "first", "--out", "o"], "--replace-init only applies with "
     "--replace block."),
    (["prune", "--blocks", "3", "--out", "o.gguf", "--max-shard-size", "1GB"], "--max-shard-size only applies to "
     "a Hugging Face output"),
    (["prune", "--blocks", "3", "--format", "gguf", "--out", "o", "--dtype", "float32"], "--dtype only applies "
     "when a model is loaded"),
    (["prune", "--blocks", "3", "--out", "o.gguf", "--device", "cpu"], "--device only applies when a model is "
     "loaded"),
    (["eval", "--ppl", "none", "--ppl-protocol", "sliding"], "--ppl-protocol only applies to perplexity measured "
     "with the protocol's windows"),
    (["eval", "--ppl", "c4-gptq", "--seq-len", "256"], "--seq-len only applies to perplexity measured with the "
     "protocol's windows"),
    (["eval", "--ppl", "wikitext2", "--stride", "256"], "--stride only applies with --ppl-protocol sliding."),
    (["eval", "--ppl-protocol", "sliding", "--bos-every"], "--bos-every only applies with --ppl-protocol paper."),
    (["eval", "--ppl", "none", "--text-field", "body"], "--text-field only applies to --ppl files"),
    (["eval", "--tasks", "none", "--num-fewshot", "5"], "--num-fewshot only applies to lm-eval tasks"),
    (["eval", "--tasks", "none", "--add-bos"], "--add-bos only applies to lm-eval tasks"),
    (["eval", "--max-new-tokens", "8"], "--max-new-tokens only applies with --generate."),
    (["retrain", "-M", "cpt", "--lora-r", "4", "--out", "o"], "--lora-r only applies to --method lora, not cpt."),
    (["retrain", "-M", "kd", "--lora-targets", "q_proj", "--out", "o"], "--lora-targets only applies to --method "
     "lora, not kd."),
    (["retrain", "-M", "lora", "--kd-alpha", "0.5", "--out", "o"], "--kd-alpha only applies to --method kd, not "
     "lora."),
    (["retrain", "-M", "kd", "--kd-hidden-weight", "2", "--out", "o"], "--kd-hidden-weight only applies with "
     "--kd-hidden. Give --kd-hidden nmse or cosine too, or drop --kd-hidden-weight."),
    (["retrain", "-M", "cpt", "--lr-schedule", "linear", "--min-lr-ratio", "0", "--out", "o"], "--min-lr-ratio "
     "only applies to --lr-schedule cosine (linear decays to 0)."),
    (["retrain", "-M", "cpt", "--optimizer-in-backward", "--max-grad-norm", "0.5", "--out", "o"],
     "--max-grad-norm only applies without --optimizer-in-backward"),
    (["retrain", "-M", "cpt", "--eval-data", "e.txt", "--eval-fraction", "0.1", "--out", "o"], "--eval-fraction "
     "only applies when held-out rows are split from --data"),
    (["retrain", "-M", "cpt", "--save-every", "0", "--keep-checkpoints", "3", "--out", "o"], "--keep-checkpoints "
     "only applies when checkpoints are written"),
    (["score", "--overwrite"], "--overwrite only applies when --out is written"),
    (["prune", "--blocks", "3", "--dry-run", "--out", "o", "--overwrite"], "--overwrite only applies when --out is "
     "written (not without --out, nor with --dry-run)"),
    (["eval", "--overwrite"], "--overwrite only applies when --out is written"),
    (["bench", "--overwrite"], "--overwrite only applies when --out is written"),
    (["score", "-c", "magnitude", "--kernels"], "--kernels only applies to criteria that run the model, not "
     "magnitude."),
    (["prune", "--blocks", "3", "--dry-run", "--replace", "linear", "--replace-ridge", "0.01"], "--replace-ridge "
     "only applies without --dry-run (nothing is fitted)."),
    (["prune", "--blocks", "3", "--dry-run", "--replace", "linear", "--data", "c4"], "--data only applies to "
     "scoring with a criterion that reads calibration text, or to --replace's fit (not with --dry-run)."),
    (["prune", "--blocks", "3", "--dry-run", "--max-shard-size", "1GB"], "--max-shard-size only applies without "
     "--dry-run"),
    (["prune", "--blocks", "3", "--dry-run", "--dtype", "float16"], "--dtype only applies when a model is loaded"),
    (["eval", "--ppl", "pydoc", "--tasks", "none", "--seed", "5"], "--seed only applies to lm-eval tasks"),
    (["eval", "--ppl", "none", "--tasks", "none", "--generate", "hi", "--limit", "3"], "--limit only applies to "
     "perplexity and lm-eval tasks"),
    (["retrain", "-M", "cpt", "--save-every", "0", "--checkpoint-dir", "ck", "--out", "o"], "--checkpoint-dir only "
     "applies when checkpoints are written or read"),
    (["retrain", "-M", "cpt", "--eval-fraction", "0", "--eval-every", "5", "--out", "o"], "--eval-every only applies "
     "when there are held-out rows"),
    (["run", "--list", "--show"], "--show only applies without --list. Drop --show: --list only lists"),
    (["run", "--list", "cpu-demo"], "the recipe argument only applies without --list"),
    (["run", "cpu-demo", "--show", "--json"], "--json only applies without --show"),
]

# Given on purpose, and read: never refused.
ACCEPTED = [
    ["score", "-c", "taylor", "--norm", "2", "--batch-size", "2"],
    ["score", "-c", "auto", "--refine", "1", "--search-sleb", "--norm", "2", "--samples", "4"],
    ["score", "-c", "sleb", "--no-sleb-barriers", "--data", "c4"],
    ["score", "-c", "magnitude", "--norm", "2", "--protect-first", "1", "--plus"],
    ["prune", "--blocks", "3", "--replace", "linear", "--data", "c4", "--seq-len", "64", "--replace-ridge", "1e-3",
     "--batch-size", "4", "--out", "o"],
    ["prune", "--scores", "s", "--ratio", "0.2", "--replace", "block", "--replace-epochs", "2", "--out", "o"],
    ["prune", "-m", "m.gguf", "--ratio", "0.2", "--out", "o.gguf", "--dtype", "float32", "--samples", "4"],
    ["prune", "--blocks", "3", "--out", "o", "--max-shard-size", "1GB", "--dtype", "bfloat16"],
    ["eval", "--ppl", "wikitext2", "--ppl-protocol", "sliding", "--stride", "256", "--seq-len", "1024"],
    ["eval", "--ppl", "c4-gptq,wikitext2", "--seq-len", "256", "--no-bos-every"],
    ["eval", "--tasks", "piqa", "--num-fewshot", "5", "--generate", "Hi", "--max-new-tokens", "4"],
    ["retrain", "-M", "lora", "--lora-r", "4", "--lr-schedule", "linear", "--out", "o"],
    ["retrain", "-M", "kd", "--kd-hidden", "nmse", "--kd-hidden-weight", "2", "--kd-alpha", "0.5", "--out", "o"],
    ["retrain", "-M", "cpt", "--save-every", "0", "--stop-after", "5", "--keep-checkpoints", "1", "--out", "o"],
    ["run", "--list", "--json"],
    ["bench", "--out", "b", "--overwrite"],
    ["prune", "--ratio", "0.2", "--dry-run", "--dtype", "float16", "--kernels"],
    ["retrain", "-M", "cpt", "--save-every", "0", "--resume", "--checkpoint-dir", "ck", "--out", "o"],
    ["eval", "--ppl", "none", "--tasks", "piqa", "--seed", "5", "--limit", "3"],
    ["prune", "--blocks", "3", "--dry-run", "--out", "o"],
    ["run", "cpu-demo", "--show", "--set", "retrain.max-steps=2"],
]


def _context(argv: list[str]):
    verb, *args = argv
    return command(verb).make_context(verb, list(args))


def _fired(argv: list[str]) -> applies.Applies | None:
    """The rule that refuses ``argv``, or None."""
    ctx = _context(argv)
    given = [n for n in ctx.params if applies._given(ctx, n)]
    for rule in applies.BY_VERB[argv[0]]:
        if applies.refused([rule], given, ctx.params) is not None:
            return rule
    return None


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_an_option_the_run_would_not_read_is_refused(argv, message):
    ctx = _context(argv)
    with pytest.raises(applies.OptionError) as err:
        applies.check_given(ctx, applies.BY_VERB[argv[0]])
    assert err.value.one_line().startswith(message), err.value.one_line()


@pytest.mark.parametrize("argv", ACCEPTED, ids=[" ".join(a) for a in ACCEPTED])
def test_options_that_are_read_are_accepted(argv):
    applies.check_given(_context(argv), applies.BY_VERB[argv[0]])


def test_every_rule_has_a_case():
    fired = {id(_fired(argv)) for argv, _ in CASES}
    missing = [(verb, rule.options) for verb, rules in applies.BY_VERB.items() for rule in rules
               if id(rule) not in fired]
    assert missing == []


def test_rules_name_real_options_and_run_on_the_defaults():
    """A misspelt name would never fire (or raise KeyError mid-check): every name is a parameter of its verb."""
    for verb, rules in applies.BY_VERB.items():
        ctx = _context([verb, "--method", "cpt"] if verb == "retrain" else [verb])
        for rule in rules:
            assert set(rule.options) <= set(ctx.params), (verb, rule.options)
            rule.when(ctx.params)  # every value a rule reads exists
            rule.only.format(**ctx.params)


def test_the_criterion_lists_match_the_registry():
    """The names checked before torch loads are the registry's (scoring.base.BUILTIN_CRITERIA)."""
    from shortllm.scoring import REGISTRY, base, registry

    assert registry.criterion_names() == list(base.BUILTIN_CRITERIA)
    assert set(applies.TEXT_FREE_CRITERIA) == {name for name, c in REGISTRY.items() if not c.needs_data}
    assert set(applies.NORM_CRITERIA) <= set(REGISTRY)


def test_an_option_at_its_default_value_is_refused_only_when_given():
    """The table reads where a value came from: `--norm 1` is given (refused with ppl); no --norm is not."""
    with pytest.raises(applies.OptionError):
        applies.check_given(_context(["score", "-c", "ppl", "--norm", "1"]), applies.SCORE)
    applies.check_given(_context(["score", "-c", "ppl"]), applies.SCORE)


def test_every_shipped_recipe_passes_its_stages_tables():
    from shortllm.pipeline import RunRequest, load_recipe, shipped_recipes
    from shortllm.pipeline.stages import stage_args

    for name, path in shipped_recipes().items():
        recipe = load_recipe(path)
        request = RunRequest(recipe=recipe, out=Path("runs") / name, data_dir="data")
        for stage in recipe.stages:
            argv = [stage, *stage_args(request, stage), "--out", f"runs/{name}/{stage}"]
            applies.check_given(_context(argv), applies.BY_VERB.get(stage, []))


def test_refusals_come_before_heavy_imports_and_write_nothing(env, tmp_path):  # noqa: F811
    assert_refused_at_once(CASES[::4], env, tmp_path)
