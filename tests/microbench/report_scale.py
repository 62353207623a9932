"""How `q4bench report` scales with submissions: a generated store of N valid bench results from H hosts
(tests/report_store.py), then `q4bench report` on it in a real process, timed. A benchmark, never a test:

    python -m tests.microbench.report_scale --results 1000 --hosts 50 [--keep DIR]

prints the wall and CPU time, the main page's size, each figure's pixel size and the machine's load average (a time
taken on a loaded machine is not a measurement of the report; say so beside it). Targets: under 20 s on
2 cores, report.html under 3 MB."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.report_store import make_store


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]  # PNG: width and height are the IHDR chunk's first 8 bytes
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def run(results: int, hosts: int, work: Path) -> dict:
    store, out = work / "store", work / "out"
    make_store(store, results, hosts)
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "suite", "report", "--results", str(store), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    page = out / "report.html"
    return {"results": results, "hosts": hosts, "seconds": seconds, "cpu_seconds": cpu, "html_bytes": page.stat().st_size,
            "md_bytes": (out / "report.md").stat().st_size, "load_before": load_before, "load_after": os.getloadavg(),
            "figures": {p.name: _png_size(p) for p in sorted((out / "figures").glob("*.png"))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="write the store and the report here instead of a temporary folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="q4bench-report-scale-") as tmp:
        work = args.keep or Path(tmp)
        found = run(args.results, args.hosts, work)
    print(f"q4bench report on {found['results']} results from {found['hosts']} hosts: {found['seconds']:.1f} s wall, "
          f"{found['cpu_seconds']:.1f} s CPU (user + system; less sensitive to other load than the wall time); "
          f"report.html {found['html_bytes'] / 1e6:.2f} MB, report.md {found['md_bytes'] / 1e6:.2f} MB")
    for name, (w, h) in found["figures"].items():
        print(f"  {name}: {w} x {h} px")
    print(f"load average before {found['load_before'][0]:.2f}, after {found['load_after'][0]:.2f} "
          f"({os.cpu_count()} CPUs): on a loaded machine this is not a clean measurement")
    return 0


if __name__ == "__main__":
    sys.exit(main())
