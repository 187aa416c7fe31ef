"""The benchmarks' pytest setup: ``--quick``, one BLAS thread, the machine in the JSON.

``--quick`` (or ``BENCH_QUICK=1``) runs every benchmark on fewer events with one round: a smoke
run of a couple of minutes whose JSON the report marks quick and never writes to the README.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.common import blas_info, machine


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true",
                     default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
                     help="fewer events, one round: a smoke run (the report marks it quick)")


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--quick"))


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> Iterator[None]:
    """BLAS (NumPy, the peers) on one thread, like the Numba kernels: on a shared machine a
    second BLAS thread spins against the other processes for the same cores."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def benchmark_group(request: pytest.FixtureRequest) -> None:
    """Group each benchmark by its module and workload (the ``wname`` parameter, if any)."""
    if "benchmark" in request.fixturenames:
        callspec = getattr(request.node, "callspec", None)
        wname = callspec.params.get("wname", "") if callspec else ""
        bench = request.module.__name__.rsplit(".", 1)[-1].removeprefix("bench_")
        request.getfixturevalue("benchmark").group = f"{bench} {wname}".strip()


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        machine_info["bench"] = {**machine(), "blas": blas_info(),
                                 "quick": bool(config.getoption("--quick"))}
