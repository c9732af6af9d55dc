"""Run Dask work (frequencies, statistics, GBLUP's G) on a cluster when asked to.

Without an address, Dask's configured scheduler is used (threads by default, or
whatever `DASK_SCHEDULER` / the Dask config names). With `--scheduler ADDRESS`
a `dask.distributed.Client` connects to that scheduler for the command's duration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gperceiver.errors import UsageError


@contextlib.contextmanager
def dask_scheduler(address: str | None) -> Iterator[None]:
    """Connect to the Dask scheduler at `address` (e.g. tcp://10.0.0.5:8786), if given."""
    if not address:
        yield
        return
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(
            "--scheduler needs the 'distributed' package: pip install distributed"
        ) from None
    try:
        client = Client(address, timeout="5s")
    except (OSError, TimeoutError) as e:
        raise UsageError(f"--scheduler {address}: cannot connect ({e})") from None
    with client:
        yield
