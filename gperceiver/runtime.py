"""Process-wide settings a command makes when it starts, never on import.

Both are set by the commands that need them (training, loading a model, predicting),
so importing any gperceiver module changes nothing about the process. Between the
phases of a long command, `release_freed_memory` hands back what a phase freed.
"""

from __future__ import annotations

import ctypes
import gc

import torch

REUSE_FREED_BELOW = 1 << 30  # bytes: glibc serves and keeps blocks below this from its heap
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def flush_denormals() -> None:
    """Flush denormal floats to zero in this thread and in every thread started from it.

    Training can leave denormal floats in weights and optimiser state (seen with
    gradient clipping in contrastive pretraining); on a CPU they make every step up
    to ten times slower. The setting is per thread and new threads inherit it, so it
    is made when a command starts, before torch starts its intra-op threads.
    """
    torch.set_flush_denormal(True)


def reuse_freed_memory() -> bool:
    """Let glibc keep freed blocks up to 1 GB for reuse in this process.

    A training step allocates activations of tens of MB, above glibc's largest
    dynamic mmap threshold (32 MB): each is mapped fresh, faulted in page by page
    and unmapped when freed, which cost a third of a mice fit's CPU time in the
    kernel. Kept in the heap, they are reused by the next step; the peak is what
    the step needs anyway. True when the setting took (glibc); elsewhere False.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, REUSE_FREED_BELOW)
                    and libc.mallopt(M_TRIM_THRESHOLD, REUSE_FREED_BELOW))
    except (OSError, AttributeError):
        return False


def release_freed_memory() -> None:
    """Hand the memory a finished phase freed back to the system.

    glibc keeps freed blocks for reuse (`reuse_freed_memory`), so a command's next
    phase (training after the marker path, prediction after training) would start
    on top of what the last one held, and allocate around it. Collecting unreachable
    objects (a trainer holds cycles) and trimming the heap lets it start from what
    is live. Does nothing where glibc is not the allocator.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
