"""The recipes shipped with shortllm (``shortllm run --list``; docs/recipes.md). Package data: *.yaml."""
