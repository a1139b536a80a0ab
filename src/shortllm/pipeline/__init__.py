"""Recipes and the stage runner behind ``shortllm run`` (docs/recipes.md)."""

from shortllm.pipeline.recipe import Recipe, apply_overrides, load_recipe
from shortllm.pipeline.runner import RunResult, run_recipe
from shortllm.pipeline.stages import RunRequest
from shortllm.pipeline.shipped import find_recipe, shipped_recipes

__all__ = ["Recipe", "RunRequest", "RunResult", "apply_overrides", "find_recipe", "load_recipe", "run_recipe",
           "shipped_recipes"]
