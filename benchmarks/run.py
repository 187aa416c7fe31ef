"""Run every benchmark, print one Rich table, write results/latest.json and results/table.md.

    python -m benchmarks.run [--quick] [--only learning,decisions,propensity]

The JSON holds the machine, every measurement and every ratio; table.md is the same as a
Markdown table for the README. The machine is shared and noisy: read the ratios (both sides
measured in this run), not the absolute figures, and never turn either into a test threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import (
    bench_decisions,
    bench_engine,
    bench_http,
    bench_learning,
    bench_ope,
    bench_propensity,
    bench_vw,
    bench_worker,
)
from benchmarks.common import (
    Measurement,
    Ratio,
    Results,
    as_dicts,
    blas_info,
    blas_threads,
    fmt,
    machine,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BENCHES: dict[str, Callable[[bool], Results]] = {
    "learning": bench_learning.run,
    "decisions": bench_decisions.run,
    "propensity": bench_propensity.run,
    "engine": bench_engine.run,
    "vw": bench_vw.run,
    "ope": bench_ope.run,
    "worker": bench_worker.run,
    "http": bench_http.run,
}


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "missed")


def _measurement_rows(ms: list[Measurement]) -> list[list[str]]:
    return [
        [m.bench, m.workload, m.case, fmt(m.value, m.unit), f"{m.n:,}",
         f"{m.target} {_verdict(m.met)}".strip(), m.note]
        for m in ms
    ]


def _ratio_rows(rs: list[Ratio]) -> list[list[str]]:
    return [
        [r.bench, r.workload, r.what, f"{r.value:.3g}x",
         "" if r.target is None else f">= {r.target:g}x {_verdict(r.met)}", r.note]
        for r in rs
    ]


M_HEAD = ["bench", "workload", "case", "value", "n", "target", "note"]
R_HEAD = ["bench", "workload", "ratio (same run, higher is better)", "value", "target", "note"]


def _markdown(head: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _machine_line(info: dict[str, str]) -> str:
    return (f"{info['processor']} ({info['machine']}), {info['cores']} cores; "
            f"Python {info['python']}, "
            f"NumPy {info['numpy']}, Numba {info['numba']}, SciPy {info['scipy']}, "
            f"MABWiser {info['mabwiser']}, Vowpal Wabbit {info['vowpalwabbit']}; "
            f"BLAS {info.get('blas', 'default threads')}")


def write_markdown(path: Path, info: dict[str, str], results: Results, quick: bool) -> None:
    ms, rs = results
    text = "\n\n".join([
        f"Machine: {_machine_line(info)}." + (" Quick run (fewer events)." if quick else ""),
        "Workloads: W1 k=10 arms, d=20; W2 k=10, d=64; W3 k=10 Bernoulli arms, no context. "
        "Ratios divide two figures measured in the same run; best of 3 unless noted.",
        _markdown(R_HEAD, _ratio_rows(rs)),
        _markdown(M_HEAD, _measurement_rows(ms)),
    ])
    path.write_text(text + "\n", encoding="utf-8")


def print_tables(console: Console, info: dict[str, str], results: Results) -> None:
    ms, rs = results
    for title, head, rows in (("Measurements", M_HEAD, _measurement_rows(ms)),
                              ("Ratios", R_HEAD, _ratio_rows(rs))):
        table = Table(title=title, caption=_machine_line(info))
        for h in head:
            table.add_column(h, justify="right" if h in ("value", "n") else "left",
                             overflow="fold")
        for row in rows:
            style = "red" if "missed" in row[-2] else None
            table.add_row(*row, style=style)
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one repeat (~20 s)")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated benchmarks")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for NumPy and the peers (default 1, like the kernels)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; expected some of {sorted(BENCHES)}")

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a log file has no width; keep one row per line
    info = machine()
    ms: list[Measurement] = []
    rs: list[Ratio] = []
    seconds: dict[str, float] = {}
    with blas_threads(args.blas_threads):
        info["blas"] = blas_info()
        for name in names:
            t0 = time.perf_counter()
            with console.status(f"running {name}..."):
                m, r = BENCHES[name](args.quick)
            seconds[name] = round(time.perf_counter() - t0, 1)
            ms += m
            rs += r
    results = (ms, rs)
    print_tables(console, info, results)

    RESULTS_DIR.mkdir(exist_ok=True)
    payload = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": info,
        "seconds": seconds,
        **as_dicts(results),
    }
    (RESULTS_DIR / "latest.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    write_markdown(RESULTS_DIR / "table.md", info, results, args.quick)
    console.print(f"wrote {RESULTS_DIR / 'latest.json'} and table.md; seconds {seconds}")


if __name__ == "__main__":
    main()
