"""SNDR, Switch-DR and DR-OS: the kernel against its twin (Open Bandit Pipeline's formulas), the
limits where they meet DR and DM, their intervals; then the estimator comparison on simulated
logs with known truth (``simulators.offline.compare``) and its command, ``cmab ope-compare``."""

import json

import numpy as np
import pytest

from bandit.cli import main
from bandit.errors import InvalidInputError
from simulators.environments import Email
from simulators.offline import compare, ope
from simulators.offline.logs import LoggedBandit
from tests import reference
from tests.simulators.offline.test_ope import _random_inputs


@pytest.fixture(scope="module")
def problem():
    return compare.softmax_problem("email", seed=0)


@pytest.fixture(scope="module")
def email_log(problem):
    (log, pi), = problem.logs(1500, 1, np.random.default_rng(3))
    return log, pi


# -- kernel against the twin -----------------------------------------------------------------


@pytest.mark.parametrize(("clip", "tau", "lam"),
                         [(np.inf, np.inf, np.inf), (2.0, 3.0, 5.0), (0.3, 0.0, 0.0),
                          (np.inf, 1.2, 0.5)])
def test_kernel_ope_more_terms_match_obp_formulas(rng, clip, tau, lam):
    pi, qhat, actions, rewards, p = _random_inputs(rng, n=53)
    U, V = np.empty((len(actions), 3)), np.empty((len(actions), 3))
    ope.ope_more_terms(pi, qhat, actions, rewards, p, clip, tau, lam, U, V)
    U4, V4 = np.empty((len(actions), 4)), np.empty((len(actions), 4))
    ope.ope_terms(pi, qhat, actions, rewards, p, clip, U4, V4)
    ratio = U.sum(axis=0) / V.sum(axis=0)
    want = reference.dr_variant_values(pi, qhat, actions, rewards, p, clip, tau, lam)
    dm = U4[:, 2].mean()
    assert dm + ratio[0] == pytest.approx(want["sndr"], rel=1e-12, abs=1e-12)
    assert ratio[1] == pytest.approx(want["switch-dr"], rel=1e-12, abs=1e-12)
    assert ratio[2] == pytest.approx(want["dr-os"], rel=1e-12, abs=1e-12)


# -- estimators ------------------------------------------------------------------------------


def test_evaluate_equals_reference_with_and_without_clipping(email_log):
    log, pi = email_log
    qhat = ope.fit_reward_model(log, seed=1)
    for clip in (None, 1.5):
        got = ope.evaluate(log, pi, ope.DR_VARIANTS, qhat=qhat, clip=clip, switch_tau=4.0,
                           os_lambda=2.0, n_boot=50, seed=4)
        want = reference.dr_variant_values(pi, qhat, log.actions, log.rewards, log.propensities,
                                           np.inf if clip is None else clip, 4.0, 2.0)
        for name, estimate in got.items():
            assert estimate.value == pytest.approx(want[name], rel=1e-10), name
            assert estimate.low <= estimate.value <= estimate.high, name
    # Clipping reaches SNDR (its weights) but not the estimators that tame weights themselves.
    free = reference.dr_variant_values(pi, qhat, log.actions, log.rewards, log.propensities,
                                       np.inf, 4.0, 2.0)
    assert got["sndr"].clip == 1.5 and got["sndr"].clipped_share > 0
    assert got["sndr"].clipping_bias == pytest.approx(got["sndr"].value - free["sndr"])
    for name in ("switch-dr", "dr-os"):
        assert got[name].clip is None and got[name].clipping_bias == 0.0
        assert got[name].value == pytest.approx(free[name], rel=1e-12)


def test_limits_meet_dr_and_dm_interval_and_all(email_log):
    log, pi = email_log
    qhat = ope.fit_reward_model(log)
    kw = {"qhat": qhat, "n_boot": 100, "seed": 2}
    base = ope.evaluate(log, pi, ("dm", "dr"), **kw)
    as_dr = ope.evaluate(log, pi, ("switch-dr", "dr-os"), **kw)
    as_dm = ope.evaluate(log, pi, ("switch-dr", "dr-os"), switch_tau=0.0, os_lambda=0.0, **kw)
    for name in ("switch-dr", "dr-os"):
        for got, want in ((as_dr[name], base["dr"]), (as_dm[name], base["dm"])):
            assert (got.value, got.low, got.high) == pytest.approx(
                (want.value, want.low, want.high), rel=1e-12), name
    # Taming the weights narrows the interval between DR's and DM's.
    mid = ope.evaluate(log, pi, ("switch-dr", "dr-os"), switch_tau=3.0, os_lambda=3.0, **kw)
    width = {k: e.high - e.low for k, e in (base | mid).items()}
    assert width["dm"] < width["switch-dr"] < width["dr"]
    assert width["dm"] < width["dr-os"] < width["dr"]


def test_sndr_interval_is_the_percentiles_of_dm_plus_normalized_correction(email_log):
    log, pi = email_log
    qhat = ope.fit_reward_model(log)
    got = ope.evaluate(log, pi, ("sndr",), qhat=qhat, n_boot=300, level=0.9, seed=11)["sndr"]
    rows = np.arange(log.n)
    w = pi[rows, log.actions] / log.propensities
    dm = (pi * qhat).sum(axis=1)
    d = log.rewards - qhat[rows, log.actions]
    U = np.column_stack([dm, w * d])
    V = np.column_stack([np.ones(log.n), w])
    idx = np.random.default_rng(11).integers(0, log.n, size=(300, log.n))
    boot = reference.bootstrap_ratios(U, V, idx).sum(axis=1)
    low, high = np.percentile(boot, [5.0, 95.0])
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-10)
    assert got.value == pytest.approx(dm.mean() + (w * d).sum() / w.sum(), rel=1e-12)


# -- refitting the reward model in each resample ---------------------------------------------


def test_refit_reward_models_are_the_weighted_ridge_twin(email_log):
    log, _ = email_log
    counts = np.random.default_rng(5).poisson(1.0, size=(3, log.n)).astype(np.float64)
    theta, means = ope.refit_reward_models(log, np.vstack([np.ones(log.n), counts]), seed=6)
    fold = np.random.default_rng(6).permutation(log.n) % 2
    for b, weights in enumerate([np.ones(log.n), *counts]):
        got = np.empty((log.n, log.n_actions))
        for f in range(2):
            got[fold == f] = log.X[fold == f] @ theta[b, f].T + means[b, f]
        want = reference.weighted_reward_model(log.actions, log.X, log.rewards, log.n_actions,
                                               fold, weights)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        if b == 0:  # all ones is the log itself: the model of the point estimate
            np.testing.assert_allclose(got, ope.fit_reward_model(log, seed=6), rtol=1e-10,
                                       atol=1e-13)


def test_dm_switch_dr_and_dr_os_resamples_refit_the_model_dr_and_sndr_hold_it(email_log):
    log, pi = email_log
    log = LoggedBandit(log.X[:300], log.actions[:300], log.rewards[:300],
                       log.propensities[:300], log.n_actions)
    pi = pi[:300]
    names = ("dm", "dr", "sndr", "switch-dr", "dr-os")
    got = ope.evaluate(log, pi, names, switch_tau=3.0, os_lambda=2.0, n_boot=40, level=0.8,
                       seed=9)
    fixed = ope.evaluate(log, pi, names, qhat=ope.fit_reward_model(log, seed=9), switch_tau=3.0,
                         os_lambda=2.0, n_boot=40, level=0.8, seed=9)
    assert ope.evaluate(log, pi, names, switch_tau=3.0, os_lambda=2.0, n_boot=40, level=0.8,
                        seed=9, refit=False) == fixed
    fold = np.random.default_rng(9).permutation(log.n) % 2
    idx = np.random.default_rng(9).integers(0, log.n, size=(40, log.n))
    boot = {name: [] for name in ("dm", "switch-dr", "dr-os")}
    for row in idx:
        weights = np.bincount(row, minlength=log.n).astype(np.float64)
        qhat = reference.weighted_reward_model(log.actions, log.X, log.rewards, log.n_actions,
                                               fold, weights)
        keep = row  # the resample's events, repeats included
        dm = reference.ope_values(pi[keep], qhat[keep], log.actions[keep], log.rewards[keep],
                                  log.propensities[keep])["dm"]
        more = reference.dr_variant_values(pi[keep], qhat[keep], log.actions[keep],
                                           log.rewards[keep], log.propensities[keep],
                                           tau=3.0, lam=2.0)
        boot["dm"].append(dm)
        boot["switch-dr"].append(more["switch-dr"])
        boot["dr-os"].append(more["dr-os"])
    for name, values in boot.items():
        want = np.percentile(values, [10.0, 90.0])
        assert (got[name].low, got[name].high) == pytest.approx(tuple(want), rel=1e-9), name
        assert got[name].value == pytest.approx(fixed[name].value, rel=1e-12), name
    for name in ("dr", "sndr"):
        assert (got[name].low, got[name].high) == pytest.approx(
            (fixed[name].low, fixed[name].high), rel=1e-10), name
    # The model's fitting noise widens DM's interval.
    assert got["dm"].high - got["dm"].low > fixed["dm"].high - fixed["dm"].low


def test_refit_needs_the_model_evaluate_fits(email_log):
    log, pi = email_log
    with pytest.raises(InvalidInputError, match="refit: the reward model can only be refitted"):
        ope.evaluate(log, pi, ("dm",), qhat=np.zeros_like(pi), refit=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"switch_tau": -1.0}, "switch_tau: expected a number >= 0 or inf, got -1.0"),
        ({"os_lambda": "much"}, "os_lambda: expected a number >= 0 or inf, got 'much'"),
        ({"os_lambda": float("nan")}, "os_lambda: expected a number >= 0"),
        ({"estimators": ("sndr", "switch_dr")}, "estimators: expected some of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    log = LoggedBandit(np.ones((3, 2)), np.array([0, 1, 2]), np.zeros(3), np.full(3, 1 / 3), 3)
    kwargs = {"estimators": ope.DR_VARIANTS, **kwargs}
    with pytest.raises(InvalidInputError, match=message):
        ope.evaluate(log, np.full((3, 3), 1 / 3), kwargs.pop("estimators"), **kwargs)


def test_sndr_refuses_a_target_that_never_takes_a_logged_action():
    log = LoggedBandit(np.ones((2, 1)), np.array([0, 0]), np.ones(2), np.full(2, 0.5), 2)
    with pytest.raises(InvalidInputError, match="sndr: the target gives probability 0"):
        ope.evaluate(log, np.array([[0.0, 1.0], [0.0, 1.0]]), ("sndr",))


# -- the comparison --------------------------------------------------------------------------


def test_comparison_scores_the_estimates_of_each_replication(problem):
    result = compare.compare_estimators(problem, events=400, replications=5,
                                        estimators=("ips", "dr-os"), os_lambda=2.0, n_boot=30,
                                        truth_contexts=50_000, seed=7)
    truth = problem.true_value(50_000)
    assert result.truth == truth and 0.01 < truth < 0.15
    logs = problem.logs(400, 5, np.random.default_rng(7))
    for r, (log, pi) in enumerate(logs):
        want = ope.evaluate(log, pi, ("ips", "dr-os"), os_lambda=2.0, n_boot=30, seed=7 + r)
        for name, e in want.items():
            assert (result.values[name][r], result.lows[name][r], result.highs[name][r]) == (
                e.value, e.low, e.high)
    ips = result.scores["ips"]
    relative = np.abs(result.values["ips"] - truth) / truth
    assert ips.relative_error_mean == pytest.approx(relative.mean())
    assert ips.relative_error_sd == pytest.approx(relative.std(ddof=1))
    assert ips.coverage == np.mean((result.lows["ips"] <= truth) & (truth <= result.highs["ips"]))
    assert ips.rmse == pytest.approx(np.sqrt(np.mean((result.values["ips"] - truth) ** 2)))
    assert [row[0] for row in result.rows()] == ["ips", "dr-os"]
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["parameters"]["switch_tau"] is None and data["parameters"]["os_lambda"] == 2.0
    assert data["parameters"]["refit"] is True


def test_true_value_is_the_exact_expectation_over_drawn_contexts(problem):
    env = Email()
    X = env.contexts(20_000, np.random.default_rng(12345))
    want = float((problem.target(X) * env.expected_rewards(X)).sum(axis=1).mean())
    assert problem.true_value(20_000) == pytest.approx(want, rel=1e-12)


def test_logs_follow_the_logging_policy(problem):
    logs = problem.logs(2000, 3, np.random.default_rng(0))
    assert len(logs) == 3 and len({float(log.X[:, 7].sum()) for log, _ in logs}) == 3
    for log, pi in logs:
        P = problem.logging(log.X)
        np.testing.assert_allclose(log.propensities, P[np.arange(log.n), log.actions])
        np.testing.assert_allclose(pi, problem.target(log.X))
        # Actions are drawn from P: the mean propensity of the drawn actions is E sum_a P^2.
        assert log.propensities.mean() == pytest.approx((P**2).sum(axis=1).mean(), rel=0.05)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: compare.compare_estimators(p, events=1), "events: expected an integer >= 2"),
        (lambda p: compare.compare_estimators(p, replications=0), "replications: expected"),
        (lambda p: compare.compare_estimators(p, estimators=("dr", "dr")), "expected distinct"),
        (lambda p: compare.softmax_problem("email4"), "single-slot environment"),
        (lambda p: compare.softmax_problem("email", logging_greed=1.0), "logging_greed"),
        (lambda p: compare.softmax_problem("email", target_temperature=0), "target_temperature"),
    ],
)
def test_comparison_bad_arguments_are_named(problem, call, message):
    with pytest.raises(InvalidInputError, match=message):
        call(problem)


@pytest.mark.slow
def test_intervals_of_the_unbiased_estimators_cover_in_90_to_99_percent_of_300_logs(problem):
    """IPS, SNIPS, DR and SNDR claim 95% intervals, and reach it on 300 logs of 5,000 events.
    Their resamples hold the reward model fixed (DR's and SNDR's corrections cancel its
    error to first order); DM's, Switch-DR's and DR-OS's are the next test."""
    result = compare.compare_estimators(problem, events=5000, replications=300,
                                        estimators=("ips", "snips", "dr", "sndr"), n_boot=200,
                                        truth_contexts=200_000, seed=1)
    coverage = {name: s.coverage for name, s in result.scores.items()}
    assert all(0.90 <= c <= 0.99 for c in coverage.values()), coverage
    assert result.replications == 300 and len(result.values["dr"]) == 300


@pytest.mark.slow
def test_intervals_refitting_the_reward_model_cover_in_90_to_99_percent_of_300_logs(problem):
    """DM, Switch-DR (tau 5) and DR-OS (lambda 10) lean on the reward model; their resamples
    refit it, so their 95% intervals carry its fitting noise and reach 95% on 300 logs of
    2,000 events. Holding the model fixed (``refit=False``) they covered far less: with these
    settings DM 16.3%, Switch-DR 93.0%, DR-OS 81.0%."""
    result = compare.compare_estimators(problem, events=2000, replications=300,
                                        estimators=("dm", "switch-dr", "dr-os"), switch_tau=5.0,
                                        os_lambda=10.0, n_boot=100, truth_contexts=200_000,
                                        seed=1)
    coverage = {name: s.coverage for name, s in result.scores.items()}
    assert all(0.90 <= c <= 0.99 for c in coverage.values()), coverage
    assert result.replications == 300 and result.parameters["refit"] is True


@pytest.mark.slow
def test_switch_dr_and_dr_os_trade_bias_for_a_lower_error_than_dr_in_300_logs():
    """Switch-DR (tau 5) and DR-OS (lambda 10) hand part of the heavy-weighted correction to
    the reward model: on ``linear`` (10 arms, weights up to about 18) both are biased
    downwards, with a smaller root mean squared error than DR, and DR-OS's interval is
    narrower."""
    problem = compare.softmax_problem("linear", seed=0)
    result = compare.compare_estimators(problem, events=2000, replications=300,
                                        estimators=("dr", "switch-dr", "dr-os"), switch_tau=5.0,
                                        os_lambda=10.0, n_boot=50, truth_contexts=200_000,
                                        seed=2)
    s = result.scores
    assert s["switch-dr"].rmse < s["dr"].rmse and s["dr-os"].rmse < s["dr"].rmse, s
    assert s["switch-dr"].bias < s["dr"].bias and s["dr-os"].bias < s["dr"].bias, s
    assert s["dr-os"].mean_width < s["dr"].mean_width
    assert s["dr"].relative_error_mean > s["dr-os"].relative_error_mean


def test_cmab_ope_compare_prints_and_writes_the_scores(tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = main(["ope-compare", "--env", "email", "--events", "300", "--replications", "4",
                 "--estimators", "dr,sndr,dr-os", "--n-boot", "20", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "sndr" in printed and "coverage" in printed and f"scores: {out}" in printed
    data = json.loads(out.read_text())
    assert list(data["scores"]) == ["dr", "sndr", "dr-os"] and data["replications"] == 4
    assert data["parameters"]["os_lambda"] == 10.0


def test_cmab_ope_compare_names_a_bad_estimator(capsys):
    assert main(["ope-compare", "--estimators", "dr,switch", "--replications", "1"]) == 2
    assert "estimators: expected distinct names" in capsys.readouterr().err
