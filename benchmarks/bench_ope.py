"""Off-policy evaluation on the Open Bandit Dataset sample (random/all: 10,000 events, 80 items,
31 context columns): the kernels against per-event NumPy references in the same run, and the
wall time of every estimator with 1,000 bootstrap resamples.

- weighted sums: ``ope_terms`` (IPS, SNIPS, DM and DR terms) against a Python loop doing the
  same per event with NumPy rows;
- bootstrap: ``bootstrap_ratios`` over 1,000 resamples against NumPy fancy indexing per
  resample (one vectorised sum per resample);
- replay of a table target: ``sample_actions`` + ``replay_matches`` against a per-event loop
  (searchsorted, compare);
- all estimators: ``ope.evaluate`` (IPS, SNIPS, DM, DR, reward model included) plus
  ``ope.replay`` of the bts policy's table, then LinUCB learning online in replay.

The obp wheel is fetched (once, cached) and parsed before any clock starts. OBP's own
estimators are not timed here: the project does not depend on obp.

Run on its own: ``python -m benchmarks.bench_ope [--quick]``.
"""

from __future__ import annotations

import time

import numpy as np

from bandit.policies import LinUCB
from benchmarks.common import Measurement, Ratio, Results, best_time, script_main
from simulators.offline import obd, ope

BENCH = "ope"
WORKLOAD = "OBD random/all"


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


def bootstrap_reference(U, V, idx):
    return np.stack([U[row].sum(axis=0) / V[row].sum(axis=0) for row in idx])


def replay_reference(pi, u, actions, rewards):
    kept, total = 0, 0.0
    for i in range(len(actions)):
        c = np.searchsorted(np.cumsum(pi[i]), u[i] * pi[i].sum(), side="right")
        if c == actions[i]:
            kept += 1
            total += rewards[i]
    return total / kept


def run(quick: bool = False) -> Results:
    repeat = 1 if quick else 3
    n_boot = 1000
    logs = obd.load_obd("all")
    log, bts = logs["random"], logs["bts"]
    n = log.n
    pi = obd.logged_policy_table(bts, log)
    qhat = ope.fit_reward_model(log)
    rng = np.random.default_rng(31)
    ms: list[Measurement] = []
    rs: list[Ratio] = []

    # Weighted sums.
    U, V = np.empty((n, 4)), np.empty((n, 4))
    ope.ope_terms(pi, qhat, log.actions, log.rewards, log.propensities, np.inf, U, V)  # compile

    def kernel_terms(_):
        ope.ope_terms(pi, qhat, log.actions, log.rewards, log.propensities, np.inf, U, V)
        return U.sum(axis=0) / V.sum(axis=0)

    t_kernel, got = best_time(lambda: None, kernel_terms, repeat)
    t_ref, want = best_time(lambda: None, lambda _: terms_reference(
        pi, qhat, log.actions, log.rewards, log.propensities), repeat)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    ms += [Measurement(BENCH, "ips/snips/dm/dr terms, kernel", WORKLOAD, n / t_kernel,
                       "events/s", n),
           Measurement(BENCH, "ips/snips/dm/dr terms, per-event NumPy", WORKLOAD, n / t_ref,
                       "events/s", n)]
    rs.append(Ratio(BENCH, "weighted-sum kernel over per-event NumPy", WORKLOAD, t_ref / t_kernel))

    # Bootstrap: the same resampled indices for both sides.
    b = 50 if quick else n_boot
    idx = rng.integers(0, n, size=(b, n))
    out = np.empty((b, 4))
    ope.bootstrap_ratios(U, V, idx[:1], out[:1])  # compile
    t_kernel, _ = best_time(lambda: None, lambda _: ope.bootstrap_ratios(U, V, idx, out), repeat)
    t_ref, boot = best_time(lambda: None, lambda _: bootstrap_reference(U, V, idx), 1)
    np.testing.assert_allclose(out, boot, rtol=1e-9)
    ms += [Measurement(BENCH, f"bootstrap {b} resamples x 4 estimators, kernel", WORKLOAD,
                       b * n / t_kernel, "resampled events/s", b * n, f"{t_kernel:.3f} s"),
           Measurement(BENCH, f"bootstrap {b} resamples, NumPy indexing per resample", WORKLOAD,
                       b * n / t_ref, "resampled events/s", b * n, f"{t_ref:.3f} s")]
    rs.append(Ratio(BENCH, "bootstrap kernel over NumPy indexing", WORKLOAD, t_ref / t_kernel))

    # Replay of a table target.
    u = rng.random(n)
    chosen = np.empty(n, dtype=np.int64)
    matched, allocation = np.empty(n, dtype=np.int64), np.zeros(log.n_actions, dtype=np.int64)

    def kernel_replay(_):
        ope.sample_actions(pi, u, chosen)
        allocation[:] = 0
        count = ope.replay_matches(chosen, log.actions, log.rewards, matched, allocation)
        return log.rewards[matched[:count]].mean()

    kernel_replay(None)  # compile
    t_kernel, got = best_time(lambda: None, kernel_replay, repeat)
    t_ref, want = best_time(lambda: None, lambda _: replay_reference(pi, u, log.actions,
                                                                     log.rewards), 1)
    assert got == want
    ms += [Measurement(BENCH, "replay of a table, kernel", WORKLOAD, n / t_kernel, "events/s", n),
           Measurement(BENCH, "replay of a table, per-event NumPy", WORKLOAD, n / t_ref,
                       "events/s", n)]
    rs.append(Ratio(BENCH, "replay kernel over per-event NumPy", WORKLOAD, t_ref / t_kernel))

    # Everything a report runs, 1,000 resamples each.
    t0 = time.perf_counter()
    estimates = ope.evaluate(log, pi, ("ips", "snips", "dm", "dr"), n_boot=n_boot)
    estimates["replay"] = ope.replay(log, pi, n_boot=n_boot).estimate
    t_all = time.perf_counter() - t0
    summary = ", ".join(f"{k} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]"
                        for k, e in estimates.items())
    ms.append(Measurement(BENCH, f"all 5 estimators, {n_boot} resamples, bts table", WORKLOAD,
                          t_all, "s", n, f"bts on-policy {bts.rewards.mean():.4f}; {summary}"))
    t0 = time.perf_counter()
    run_ = ope.replay(log, LinUCB(log.n_actions, log.dim, rng=0), n_boot=n_boot)
    t_lin = time.perf_counter() - t0
    ms.append(Measurement(BENCH, "replay, LinUCB learning online (batches of 100)", WORKLOAD,
                          n / t_lin, "events/s", n,
                          f"kept {run_.estimate.n_events}; {t_lin:.2f} s incl. bootstrap"))
    return ms, rs


if __name__ == "__main__":
    script_main(run)
