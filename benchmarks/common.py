"""What every benchmark records beside pytest-benchmark's timing, and the machine description.

The machine is shared and noisy, so no figure stands alone: every headline number is a ratio
against a reference measured in the same run. A benchmark test times its case with the
``benchmark`` fixture (``benchmark.pedantic``: setup untimed, a few rounds, the minimum is
read: on a shared machine noise only adds time) and describes it with ``record``: the case,
its workload, the events the time covers, the unit it is read in, notes, a target, and the
ratios it is the numerator of. ``benchmarks.report`` turns the ``--benchmark-json`` output into
the tables; nothing is computed from a clock here.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from importlib import metadata
from typing import Any

BATCH_ROUNDS = 3  # rounds of a full run; a quick run takes 1


def rounds(quick: bool, full: int = BATCH_ROUNDS) -> int:
    """Rounds of ``benchmark.pedantic``: ``full`` in a full run, one in a quick run."""
    return 1 if quick else full


def ratio(what: str, over: str, *, workload: str | None = None, bench: str | None = None,
          target: float | None = None, note: str = "", by: str = "speed",
          factor: float = 1.0) -> dict[str, Any]:
    """A ratio whose numerator is the measurement it is recorded with and whose denominator is
    the case ``over`` (same bench and workload unless given).

    by="speed": the denominator's seconds per event over the numerator's (above 1: the
    numerator is faster); by="value": factor * numerator value / denominator value (a share);
    by="paired": the median over rounds of the per-round speed ratios of two cases measured
    in turns (both record ``rounds``), with min/median/max in the note. ``target``: the
    minimum the issue asks for, reported as met or missed, never asserted.
    """
    return {"what": what, "over": over, "workload": workload, "bench": bench,
            "target": target, "note": note, "by": by, "factor": factor}


def record(benchmark: Any, bench: str, case: str, workload: str, n: int, unit: str, *,
           seconds: float | None = None, scale: float = 1.0, note: str = "",
           mean_reward: float | None = None, target: tuple[str, float] | None = None,
           ratios: Sequence[dict[str, Any]] = (), rounds: Sequence[float] | None = None) -> None:
    """Describe one measurement in ``benchmark.extra_info`` (a test may record several).

    seconds: the time the figure is made of; None for the fixture's own minimum (the primary
    case of the test). n: events, rows or requests that time covers. unit: "<x>/s" reads
    n / seconds, "us/<x>" seconds / n in microseconds, "ms" seconds in milliseconds, anything
    else seconds * scale (e.g. "s/280k" with scale 10 when a tenth of the send was timed).
    target: ("<=", 3.0) or (">=", 1e5) on the value in its unit; rounds: per-round seconds of
    cases measured in turns.
    """
    benchmark.extra_info["bench"] = bench
    benchmark.extra_info.setdefault("measurements", []).append({
        "bench": bench, "case": case, "workload": workload, "n": int(n), "unit": unit,
        "seconds": seconds, "scale": scale, "note": note, "mean_reward": mean_reward,
        "target": list(target) if target else None, "ratios": list(ratios),
        "rounds": list(rounds) if rounds is not None else None,
    })


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


PEERS = ("numpy", "numba", "scipy", "mabwiser", "vowpalwabbit", "bayesianbandits", "obp")


def machine() -> dict[str, str]:
    """Processor, cores and the versions the numbers depend on."""

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"processor": processor(), "machine": platform.machine(), "cores": str(cores),
            "python": platform.python_version(), **{dist: version(dist) for dist in PEERS}}


def blas_info() -> str:
    """'openblas x1' style summary of the BLAS libraries loaded and their thread counts."""
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} x{i['num_threads']}" for i in threadpool_info()
                     if i["user_api"] == "blas") or "none loaded"
