"""Shared by the benchmark scripts: time one command and read its own peak RSS."""

from __future__ import annotations

import json
import subprocess
import sys

_WRAPPER = (
    "import resource,subprocess,sys,time,json;t=time.perf_counter();"
    "r=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
    "e=time.perf_counter()-t;"
    "sys.stderr.write(r.stderr) if r.returncode else None;"
    "print(json.dumps([r.returncode,e,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
)


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, measured in a fresh wrapper process
    (so the peak is that command's own); exits with its stderr when it fails."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True)
    rc, elapsed, rss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return elapsed, rss_kb / 1024
