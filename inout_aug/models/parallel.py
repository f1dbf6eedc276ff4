"""The accelerate set-up of the training loops: data parallel on GPUs, and on CPUs (gloo) under torchrun."""

from __future__ import annotations

import os

import torch


def launched_distributed() -> bool:
    """Whether this process is one of several (``WORLD_SIZE`` above 1, as torchrun and ``accelerate launch`` set)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(cpu: bool = False, **options):
    """An ``accelerate.Accelerator`` for this process (``options`` go to it); ``cpu`` forces the CPU.

    accelerate starts a process group only for a GPU backend unless told ``cpu=True``: without CUDA, a process of
    several (``WORLD_SIZE`` above 1, as torchrun and ``accelerate launch`` set it) is therefore put on the CPU, so
    the processes train together (gloo) instead of each on its own.
    """
    from accelerate import Accelerator

    return Accelerator(cpu=cpu or (launched_distributed() and not torch.cuda.is_available()), **options)
