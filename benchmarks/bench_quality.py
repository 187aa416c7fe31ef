"""Learning quality in the benchmark run: ``benchmarks.quality`` (every project policy and the
peers on the same data, deciding then learning in batches of 100) as one benchmark, whose
result is not a time but two tables, at defaults and tuned, that ``benchmarks.report`` writes
beside the ratios (and into the README with them).

Run on its own: ``pytest -c benchmarks/pytest.ini benchmarks/bench_quality.py [--quick]``, or
``python -m benchmarks.quality`` for the Rich tables alone.
"""

from __future__ import annotations

from typing import Any

from benchmarks import quality
from benchmarks.common import record

BENCH = "quality"


def table(title: str, summary: dict[str, Any], note: str) -> dict[str, Any]:
    """One summary of ``quality.run`` as a report table: a row per learner (the project's
    starred), a cell per environment (mean expected reward, its sd over the seeds, share of the
    oracle-over-uniform gap, rank), the mean rank last."""
    envs = summary["environments"]
    rows = []
    for name, cells in summary["learners"].items():
        rows.append([name + (" *" if name in quality.PROJECT else ""), *[
            f"{cells[e]['reward']:.3f}±{cells[e]['reward_sd']:.3f} ({cells[e]['gap_share']:.0%}) "
            f"#{cells[e]['rank']}"
            for e in envs], f"{cells['mean_rank']:.1f}"])
    return {"title": title, "head": ["learner", *envs, "mean rank"], "rows": rows,
            "note": note}


def test_learning_quality(benchmark: Any, quick: bool) -> None:
    result = benchmark.pedantic(quality.run, args=(quick,), rounds=1, iterations=1)
    cells = ("mean expected reward ± its sd over the seeds (share of the oracle-over-uniform "
             "gap) #rank; * the project's")
    benchmark.extra_info["tables"] = [
        table("Learning quality at defaults", result["summary"]["defaults"], cells + "."),
        table("Learning quality tuned (best setting per environment)",
              result["summary"]["tuned"], cells + "; the setting is the best of a few."),
    ]
    record(benchmark, BENCH, "every learner on every environment, all settings", "Q",
           len(result["rows"]), "s", note="progressive validation in batches of 100")
