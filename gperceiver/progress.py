"""Progress bars on stderr, shared by every long-running command.

Shown when stderr is a terminal (so logs stay clean), or always with
GPERCEIVER_PROGRESS=1; never with `enabled=False` (--quiet).
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr following the rules above."""
    forced = os.environ.get("GPERCEIVER_PROGRESS", "") not in ("", "0")
    if not enabled:
        disable: bool | None = True
    elif forced:
        disable = False
    else:
        disable = None  # tqdm: off when not a terminal
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable,
                dynamic_ncols=True)
