"""Off-policy evaluation on the Open Bandit Dataset sample (random/all: 10,000 events, 80 items,
31 context columns): the kernels against per-event NumPy references in the same run, and the
wall time of every estimator with 1,000 bootstrap resamples.

- weighted sums: ``ope_terms`` (IPS, SNIPS, DM and DR terms) against a Python loop doing the
  same per event with NumPy rows;
- bootstrap: ``resampled_ratios`` (each resample drawn where it is summed) over 1,000
  resamples against NumPy drawing the same (1,000, n) indices, then fancy indexing per resample
  (one vectorised sum per resample);
- replay of a table target: ``sample_actions`` + ``replay_matches`` against a per-event loop
  (searchsorted, compare);
- all estimators: ``ope.evaluate`` (IPS, SNIPS, DM, DR, reward model included) plus
  ``ope.replay`` of the bts policy's table, then LinUCB learning online in replay;
- against Open Bandit Pipeline (the bench extra, never a dependency of the project): IPS,
  SNIPS, DM and DR with 1,000-resample intervals, OBP's ``estimate_interval`` beside
  ``ope.evaluate`` on the same arrays and the same reward model, held fixed in the resamples
  on both sides (target: the project 10x faster). The same work: OBP's four calls with
  ``random_state=0`` resample the same 1,000 index sets for every estimator, as the project's
  one call does; OBP draws them once per estimator, which its per-estimator API imposes. The
  two run in paired rounds (in turns, the order reversed every other round), timed in wall
  and in CPU seconds of this process; the ratios are medians of the per-round ratios.

The dataset is loaded and parsed (``simulators.offline.obd``) before any clock starts.

Run on its own: ``pytest benchmarks/bench_ope.py [--quick]``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from bandit.policies import LinUCB
from benchmarks.common import ratio, record, rounds
from simulators.offline import obd, ope
from simulators.offline.logs import LoggedBandit

BENCH = "ope"
WORKLOAD = "OBD random/all"
N_BOOT = 1000
FOUR = ("ips", "snips", "dm", "dr")


def terms_reference(pi, qhat, actions, rewards, propensities):
    """Per event, NumPy rows: the four estimates as plain means / ratios."""
    n = len(actions)
    U = np.empty((n, 4))
    V = np.ones((n, 4))
    for i in range(n):
        a = actions[i]
        w = pi[i, a] / propensities[i]
        dm = float(pi[i] @ qhat[i])
        U[i] = (w * rewards[i], w * rewards[i], dm, dm + w * (rewards[i] - qhat[i, a]))
        V[i, 1] = w
    return U.sum(axis=0) / V.sum(axis=0)


def bootstrap_reference(U, V, n_boot, seed):
    idx = np.random.default_rng(seed).integers(0, U.shape[0], size=(n_boot, U.shape[0]))
    return np.stack([U[row].sum(axis=0) / V[row].sum(axis=0) for row in idx])


def replay_reference(pi, u, actions, rewards):
    kept, total = 0, 0.0
    for i in range(len(actions)):
        c = np.searchsorted(np.cumsum(pi[i]), u[i] * pi[i].sum(), side="right")
        if c == actions[i]:
            kept += 1
            total += rewards[i]
    return total / kept


@dataclass(frozen=True)
class OBD:
    """The random/all log, the bts policy's table pi (n, k) as target, the reward model's
    predictions qhat (n, k), and the four estimators' terms U, V (n, 4) of the kernel."""

    log: LoggedBandit
    bts: LoggedBandit
    pi: np.ndarray
    qhat: np.ndarray
    U: np.ndarray
    V: np.ndarray
    quick: bool


@pytest.fixture(scope="module")
def obd_data(quick: bool) -> OBD:
    logs = obd.load_obd("all")
    log, bts = logs["random"], logs["bts"]
    pi = obd.logged_policy_table(bts, log)
    qhat = ope.fit_reward_model(log)
    U, V = np.empty((log.n, 4)), np.empty((log.n, 4))
    ope.ope_terms(pi, qhat, log.actions, log.rewards, log.propensities, np.inf, U, V)  # compile
    # Every kernel the timed estimators call, compiled (or loaded from the cache) untimed.
    ope.evaluate(log, pi, FOUR, n_boot=2)
    ope.evaluate(log, pi, FOUR, qhat=qhat, n_boot=2)
    ope.replay(log, pi, n_boot=2)
    ope.replay(log, LinUCB(log.n_actions, log.dim, rng=0), n_boot=2)
    return OBD(log, bts, pi, qhat, U, V, quick)


def _terms(d: OBD) -> np.ndarray:
    ope.ope_terms(d.pi, d.qhat, d.log.actions, d.log.rewards, d.log.propensities, np.inf,
                  d.U, d.V)
    return d.U.sum(axis=0) / d.V.sum(axis=0)


def test_terms_kernel(benchmark, obd_data):
    d = obd_data
    got = benchmark.pedantic(_terms, args=(d,), rounds=rounds(d.quick))
    np.testing.assert_allclose(got, terms_reference(d.pi, d.qhat, d.log.actions, d.log.rewards,
                                                    d.log.propensities), rtol=1e-9)
    record(benchmark, BENCH, "ips/snips/dm/dr terms, kernel", WORKLOAD, d.log.n, "events/s",
           ratios=[ratio("weighted-sum kernel over per-event NumPy", TERMS_REF)])


TERMS_REF = "ips/snips/dm/dr terms, per-event NumPy"


def test_terms_reference(benchmark, obd_data):
    d = obd_data
    benchmark.pedantic(terms_reference, args=(d.pi, d.qhat, d.log.actions, d.log.rewards,
                                              d.log.propensities), rounds=rounds(d.quick))
    record(benchmark, BENCH, TERMS_REF, WORKLOAD, d.log.n, "events/s")


def _n_boot(d: OBD) -> int:
    """Resamples of the bootstrap benchmarks: 1,000 (50 when quick)."""
    return 50 if d.quick else N_BOOT


def test_bootstrap_kernel(benchmark, obd_data):
    d = obd_data
    _terms(d)
    out = np.empty((_n_boot(d), 4))
    ope.resampled_ratios(d.U, d.V, np.random.default_rng(31), out[:1])  # compile
    benchmark.pedantic(lambda: ope.resampled_ratios(d.U, d.V, np.random.default_rng(31), out),
                       rounds=rounds(d.quick))
    np.testing.assert_allclose(out, bootstrap_reference(d.U, d.V, _n_boot(d), 31), rtol=1e-9)
    record(benchmark, BENCH, f"bootstrap {out.shape[0]} resamples x 4 estimators, kernel",
           WORKLOAD, _n_boot(d) * d.log.n, "resampled events/s",
           ratios=[ratio("bootstrap kernel over NumPy indexing",
                         f"bootstrap {out.shape[0]} resamples, NumPy indexing per resample")])


def test_bootstrap_reference(benchmark, obd_data):
    d = obd_data
    _terms(d)
    benchmark.pedantic(bootstrap_reference, args=(d.U, d.V, _n_boot(d), 31))
    record(benchmark, BENCH, f"bootstrap {_n_boot(d)} resamples, NumPy indexing per resample",
           WORKLOAD, _n_boot(d) * d.log.n, "resampled events/s", note="one round")


def test_replay_kernel(benchmark, obd_data):
    """Replay of a table target: sample the target's action per event, keep the matches."""
    d = obd_data
    log = d.log
    u = np.random.default_rng(37).random(log.n)
    chosen = np.empty(log.n, dtype=np.int64)
    matched, allocation = np.empty(log.n, dtype=np.int64), np.zeros(log.n_actions, np.int64)

    def kernel_replay() -> float:
        ope.sample_actions(d.pi, u, chosen)
        allocation[:] = 0
        count = ope.replay_matches(chosen, log.actions, log.rewards, matched, allocation)
        return float(log.rewards[matched[:count]].mean())

    kernel_replay()  # compile
    got = benchmark.pedantic(kernel_replay, rounds=rounds(d.quick))
    assert got == replay_reference(d.pi, u, log.actions, log.rewards)
    record(benchmark, BENCH, "replay of a table, kernel", WORKLOAD, log.n, "events/s",
           ratios=[ratio("replay kernel over per-event NumPy", REPLAY_REF)])


REPLAY_REF = "replay of a table, per-event NumPy"


def test_replay_reference(benchmark, obd_data):
    d = obd_data
    u = np.random.default_rng(37).random(d.log.n)
    benchmark.pedantic(replay_reference, args=(d.pi, u, d.log.actions, d.log.rewards))
    record(benchmark, BENCH, REPLAY_REF, WORKLOAD, d.log.n, "events/s", note="one round")


def _summary(estimates: dict[str, Any]) -> str:
    return ", ".join(f"{k} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]" for k, e in estimates.items())


def test_all_estimators(benchmark, obd_data):
    """Everything a report runs, 1,000 resamples each: ``ope.evaluate`` (IPS, SNIPS, DM, DR,
    the reward model fitted and refitted per resample) and ``ope.replay`` of the table."""
    d = obd_data

    def report() -> dict[str, Any]:
        estimates = ope.evaluate(d.log, d.pi, FOUR, n_boot=N_BOOT)
        estimates["replay"] = ope.replay(d.log, d.pi, n_boot=N_BOOT).estimate
        return estimates

    estimates = benchmark.pedantic(report)
    record(benchmark, BENCH, f"all 5 estimators, {N_BOOT} resamples, bts table", WORKLOAD,
           d.log.n, "s", note=f"one round; bts on-policy {d.bts.rewards.mean():.4f}; "
                              f"{_summary(estimates)}")


def test_replay_linucb(benchmark, obd_data):
    d = obd_data
    run = benchmark.pedantic(lambda policy: ope.replay(d.log, policy, n_boot=N_BOOT),
                             setup=lambda: ((LinUCB(d.log.n_actions, d.log.dim, rng=0),), {}))
    record(benchmark, BENCH, "replay, LinUCB learning online (batches of 100)", WORKLOAD,
           d.log.n, "events/s",
           note=f"one round; kept {run.estimate.n_events}; incl. bootstrap")


OBP_CASE = f"Open Bandit Pipeline IPS, SNIPS, DM, DR, estimate_interval ({N_BOOT} resamples)"
PROJECT_CASE = f"project IPS, SNIPS, DM, DR, {N_BOOT} resamples, same qhat"
CPU = ", CPU seconds of this process"
OBP_ROUNDS, OBP_ROUNDS_QUICK = 7, 3  # paired rounds


def _obp_four(d: OBD) -> Any:
    """Open Bandit Pipeline 0.4.1's estimators on the same arrays: the target as an action
    distribution (n, k, 1), the same reward model as estimated_rewards_by_reg_model."""
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
    )

    log = d.log
    common = {"reward": log.rewards, "action": log.actions, "action_dist": d.pi[:, :, None],
              "n_bootstrap_samples": N_BOOT, "random_state": 0}
    weighted = {**common, "pscore": log.propensities}
    model = {"estimated_rewards_by_reg_model": d.qhat[:, :, None]}
    calls = {"ips": (InverseProbabilityWeighting(), weighted),
             "snips": (SelfNormalizedInverseProbabilityWeighting(), weighted),
             "dm": (DirectMethod(), {**common, **model}),
             "dr": (DoublyRobust(), {**weighted, **model})}

    def four() -> dict[str, dict[str, float]]:
        return {name: est.estimate_interval(**kwargs) for name, (est, kwargs) in calls.items()}

    return four


def test_project_four_and_obp(benchmark, obd_data):
    """IPS, SNIPS, DM, DR with 1,000-resample intervals from the same inputs, the reward model
    given (held fixed in the resamples): ``ope.evaluate`` and OBP's ``estimate_interval``, in
    paired rounds."""
    d = obd_data
    cases = {"project": lambda: ope.evaluate(d.log, d.pi, FOUR, qhat=d.qhat, n_boot=N_BOOT),
             "obp": _obp_four(d)}
    seconds: dict[str, list[float]] = {"project": [], "obp": []}
    cpu_seconds: dict[str, list[float]] = {"project": [], "obp": []}
    out: dict[str, Any] = {}

    def paired() -> None:
        order = list(cases) if len(seconds["obp"]) % 2 == 0 else list(cases)[::-1]
        for case in order:
            wall, cpu = time.perf_counter(), time.process_time()
            out[case] = cases[case]()
            seconds[case].append(time.perf_counter() - wall)
            cpu_seconds[case].append(time.process_time() - cpu)

    benchmark.pedantic(paired, rounds=OBP_ROUNDS_QUICK if d.quick else OBP_ROUNDS)
    obp_summary = ", ".join(f"{k} {v['mean']:.4f} [{v['95.0% CI (lower)']:.4f}, "
                            f"{v['95.0% CI (upper)']:.4f}]" for k, v in out["obp"].items())
    rounds_note = f"median of {len(seconds['obp'])} paired rounds"
    what = "IPS, SNIPS, DM, DR with 1,000-resample intervals"
    for suffix, times in (("", seconds), (CPU, cpu_seconds)):
        record(benchmark, BENCH, OBP_CASE + suffix, WORKLOAD, d.log.n, "s",
               seconds=statistics.median(times["obp"]), rounds=times["obp"],
               note=f"{rounds_note}; {obp_summary}")
        record(benchmark, BENCH, PROJECT_CASE + suffix, WORKLOAD, d.log.n, "s",
               seconds=statistics.median(times["project"]), rounds=times["project"],
               note=f"{rounds_note}; {_summary(out['project'])}",
               ratios=[ratio(f"project estimators / Open Bandit Pipeline's (time ratio"
                             f"{', CPU seconds' if suffix else ''})", OBP_CASE + suffix,
                             by="paired", target=10.0, note=what)])
