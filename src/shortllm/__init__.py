"""shortllm: make large language models shorter by removing whole transformer blocks."""

__version__ = "0.1.0"
