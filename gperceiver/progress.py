"""Progress bars on stderr, shared by every long-running command.

Shown when stderr is a terminal (so logs stay clean), or always with
GPERCEIVER_PROGRESS=1; never with `enabled=False` (--quiet).
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def shown(enabled: bool = True) -> bool:
    """Whether progress bars are shown, by the rule above (also for Lightning's, bio2zarr's)."""
    if not enabled:
        return False
    if os.environ.get("GPERCEIVER_PROGRESS", "") not in ("", "0"):
        return True
    return sys.stderr.isatty()


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr following the rule above."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown(enabled),
                dynamic_ncols=True)
