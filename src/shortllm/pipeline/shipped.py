"""The recipes shipped inside the package (``src/shortllm/recipes/*.yaml``): list them, find one by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from shortllm.errors import RecipeError


def _folder() -> Path:
    return Path(str(resources.files("shortllm") / "recipes"))


def shipped_recipes() -> dict[str, Path]:
    """Name -> file of every shipped recipe, sorted by name."""
    folder = _folder()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def find_recipe(spec: str) -> Path:
    """A recipe file: a path to a YAML file, or the name of a shipped recipe.

    Raises:
        RecipeError: neither a file nor a shipped name (the names are listed).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if spec in shipped:
        return shipped[spec]
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        raise RecipeError(f"no recipe file {spec}", "check the path, or pick one of `shortllm run --list`")
    raise RecipeError(f"no recipe named '{spec}'", f"shipped recipes: {', '.join(shipped) or 'none'} "
                      "(or give a path to your own .yaml)")
