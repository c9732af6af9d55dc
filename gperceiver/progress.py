"""Progress bars on stderr, shared by every long-running command.

Shown when stderr is a terminal (so logs stay clean), or always with
GPERCEIVER_PROGRESS=1; never with `enabled=False` (--quiet).
"""

from __future__ import annotations

import os
import sys

from dask.callbacks import Callback
from tqdm import tqdm


def shown(enabled: bool = True) -> bool:
    """Whether progress bars are shown, by the rule above (also for Lightning's, bio2zarr's)."""
    if not enabled:
        return False
    if os.environ.get("GPERCEIVER_PROGRESS", "") not in ("", "0"):
        return True
    return sys.stderr.isatty()


def progress_bar(total: float | None, desc: str, unit: str, enabled: bool = True,
                 share: bool = False) -> tqdm:
    """A tqdm bar on stderr following the rule above; `share`: of work in no countable
    unit (`total` of it), shown as a percentage, time spent and time left."""
    extra = {"bar_format": "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"} \
        if share else {}
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown(enabled),
                dynamic_ncols=True, **extra)


class DaskProgress(Callback):
    """A bar over the tasks of Dask computations run on a local scheduler (threads),
    used as a context manager around `compute`; a distributed cluster shows its own
    dashboard instead."""

    def __init__(self, desc: str, enabled: bool = True):
        super().__init__()
        self.desc, self.enabled, self.bar = desc, enabled, None

    def _start_state(self, dsk, state) -> None:
        total = sum(len(state[k]) for k in ("ready", "waiting", "running", "finished"))
        self.bar = progress_bar(total, self.desc, "task", self.enabled)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        if self.bar is not None:
            self.bar.update()

    def _finish(self, dsk, state, errored) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
