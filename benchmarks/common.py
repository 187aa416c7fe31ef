"""Result records, timing and the machine description shared by the benchmark scripts.

The machine is shared and noisy, so no figure stands alone: every headline number is a ratio
against a reference measured in the same process a few seconds earlier or later.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One timed figure: `value` in `unit` for `case` on `workload`, over `n` events or rows."""

    bench: str
    case: str
    workload: str
    value: float
    unit: str
    n: int
    note: str = ""
    target: str = ""  # e.g. "<= 3 us/event": stated by the issue, reported, never asserted
    met: bool | None = None


@dataclass(frozen=True)
class Ratio:
    """`value` = numerator / denominator of two same-run measurements (higher is better).

    `target` is the minimum the issue asks for (None: informative only); `met` says whether this
    run reached it. Nothing fails on a miss: wall-clock figures are reported, never asserted.
    """

    bench: str
    what: str
    workload: str
    value: float
    target: float | None = None
    note: str = ""
    met: bool | None = field(default=None)

    def __post_init__(self) -> None:
        if self.target is not None and self.met is None:
            object.__setattr__(self, "met", bool(self.value >= self.target))


Results = tuple[list[Measurement], list[Ratio]]


def best_time(setup: Callable[[], Any], body: Callable[[Any], Any],
              repeat: int) -> tuple[float, Any]:
    """Smallest wall time of `body(setup())` over `repeat` runs, and body's last return value.

    setup is never timed. The minimum, not the mean: on a shared machine noise only adds time.
    """
    best = float("inf")
    out = None
    for _ in range(repeat):
        state = setup()
        t0 = time.perf_counter()
        out = body(state)
        best = min(best, time.perf_counter() - t0)
    return best, out


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Limit BLAS (NumPy, MABWiser) to n threads while the benchmarks run.

    One thread by default: the Numba kernels use one core, and on a shared machine a second
    BLAS thread spins against the other processes for the same cores. Without threadpoolctl
    the BLAS default stays (and the JSON says so).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def blas_info() -> str:
    """'openblas x1' style summary of the BLAS libraries loaded and their thread counts."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl absent)"
    return ", ".join(f"{i['internal_api']} x{i['num_threads']}" for i in threadpool_info()
                     if i["user_api"] == "blas") or "none loaded"


def processor() -> str:
    """platform.processor(), or the /proc/cpuinfo model name where that is empty (Linux)."""
    name = platform.processor()
    if not name:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
                for line in fh:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
    return name or platform.machine()


def machine() -> dict[str, str]:
    """Processor, cores and versions that the numbers depend on."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "processor": processor(),
        "machine": platform.machine(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                     else os.cpu_count()),
        "python": platform.python_version(),
        "numpy": version("numpy"),
        "numba": version("numba"),
        "scipy": version("scipy"),
        "mabwiser": version("mabwiser"),
        "vowpalwabbit": version("vowpalwabbit"),
    }


def as_dicts(results: Results) -> dict[str, list[dict[str, Any]]]:
    measurements, ratios = results
    return {"measurements": [asdict(m) for m in measurements],
            "ratios": [asdict(r) for r in ratios]}


def fmt(value: float, unit: str = "") -> str:
    """Three significant figures, thousands separated: 1,234,000 events/s, 2.41 us/event."""
    if value != value:  # NaN: the case did not run
        return "n/a"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def print_results(results: Results) -> None:
    """Plain-text dump for running one script on its own."""
    measurements, ratios = results
    for m in measurements:
        note = f"  ({m.note})" if m.note else ""
        if m.target:
            note += f"  target {m.target}: {'met' if m.met else 'MISSED'}"
        print(f"{m.bench:10s} {m.workload:3s} {m.case:44s} {fmt(m.value, m.unit):>22s}{note}")
    for r in ratios:
        target = f"  target >= {r.target:g}x: {'met' if r.met else 'MISSED'}" if r.target else ""
        print(f"{r.bench:10s} {r.workload:3s} {r.what:60s} {r.value:10.3g}x{target}")


def script_main(run: Callable[[bool], Results]) -> None:
    """Entry point of one benchmark script: `python -m benchmarks.bench_x [--quick]`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer events, one repeat")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads (default 1)")
    args = parser.parse_args()
    with blas_threads(args.blas_threads):
        print_results(run(args.quick))
