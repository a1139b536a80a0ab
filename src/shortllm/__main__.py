"""``python -m shortllm``: the same command as ``shortllm`` (handy for torchrun and accelerate launch)."""

from shortllm.cli.app import main

main()
