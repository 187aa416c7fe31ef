"""simulate(), the report files and the `cmab simulate` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bandit.cli import main
from bandit.errors import InvalidInputError
from simulators.email_campaign import EmailCampaign
from simulators.environments import Artwork, Email, LinearLogistic
from simulators.environments.supervised import SupervisedBandit, gaussian_blobs
from simulators.reports.simulation import write_report
from simulators.simulate import ORACLE, POLICY_NAMES, UNIFORM, make_policies, simulate

ROOT = Path(__file__).resolve().parents[2]


def run(env, names, steps=3000, batch_size=100, seed=0):
    return simulate(
        env, make_policies(names, env, seed=seed), steps, batch_size=batch_size, seed=seed,
        progress=False,
    )


@pytest.fixture(scope="module")
def email_result():
    return run(Email(), ["lin_ucb", "beta_ts"])


def test_result_structure(email_result):
    result = email_result
    assert list(result.runs) == ["lin_ucb", "beta_ts", UNIFORM, ORACLE]
    np.testing.assert_array_equal(result.batch_ends, np.arange(100, 3001, 100))
    for run_ in result.runs.values():
        for curve in (run_.cumulative_reward, run_.cumulative_expected, run_.cumulative_regret):
            assert curve.shape == (30,)
        assert list(run_.allocation) == ["subject_line"]
        allocation = run_.allocation["subject_line"]
        assert allocation.shape == (30, 5) and allocation.dtype == np.int64
        np.testing.assert_array_equal(allocation.sum(axis=1), 100)
        assert (np.diff(run_.cumulative_reward) >= 0).all()
        # The oracle maximises the expected reward of every step, so regret never shrinks.
        assert (np.diff(run_.cumulative_regret) >= -1e-12).all()
        assert 0.0 <= run_.mean_reward <= 1.0
    assert result.runs[ORACLE].regret == 0.0
    rows = {row.policy: row for row in result.summary()}
    assert list(rows) == list(result.runs)
    assert rows[UNIFORM].lift_vs_uniform == 0.0 and rows[ORACLE].share_of_oracle == 1.0


def test_last_batch_may_be_short():
    result = run(Email(), ["epsilon_greedy"], steps=250, batch_size=100)
    np.testing.assert_array_equal(result.batch_ends, [100, 200, 250])
    allocation = result.runs["epsilon_greedy"].allocation["subject_line"]
    np.testing.assert_array_equal(allocation.sum(axis=1), [100, 100, 50])


def test_common_random_numbers_and_reproducibility(email_result):
    # Baselines see the same draws whichever policies run, and a policy's own stream is keyed
    # by its name, so its run does not depend on its companions either.
    alone = run(Email(), ["beta_ts"])
    for name in ("beta_ts", UNIFORM, ORACLE):
        a, b = email_result.runs[name], alone.runs[name]
        np.testing.assert_array_equal(a.cumulative_reward, b.cumulative_reward)
        np.testing.assert_array_equal(a.allocation["subject_line"], b.allocation["subject_line"])


def test_new_arm_is_never_chosen_before_it_arrives():
    result = run(Email(new_arm_at=1000), ["lin_ucb", "hybrid_lin_ucb"], steps=2000)
    for run_ in result.runs.values():
        assert (run_.allocation["subject_line"][:10, -1] == 0).all()
    assert result.runs[ORACLE].allocation["subject_line"][10:, -1].sum() > 0
    assert result.new_arm == "subject_line/plain"


def test_every_policy_runs_on_every_single_slot_environment():
    for env in (Email(drift_steps=1000), LinearLogistic(n_arms=4, dim=6, seed=1),
                Artwork(new_arm_at=500), SupervisedBandit(*gaussian_blobs(n=300))):
        result = run(env, POLICY_NAMES, steps=1000)
        assert list(result.runs) == [*POLICY_NAMES, UNIFORM, ORACLE]


def test_vw_and_settings_run_in_a_simulation():
    # VW by name, with its settings; a setting given reaches the policy, the rest stay default.
    env = Artwork(new_arm_at=300)
    policies = make_policies(["vw:exploration=epsilon:epsilon=0.2", "lin_ucb:alpha=0.3:l2=2"],
                             env, seed=1)
    vw, linucb = policies.values()
    assert (vw.kind, vw.exploration, vw.epsilon, vw.bag) == ("vw", "epsilon", 0.2, 5)
    assert (linucb.alpha, linucb.l2, linucb.epsilon) == (0.3, 2.0, 0.01)
    result = simulate(env, policies, 600, batch_size=100, seed=1, progress=False)
    assert list(result.runs) == ["vw:exploration=epsilon:epsilon=0.2", "lin_ucb:alpha=0.3:l2=2",
                                 UNIFORM, ORACLE]
    assert all(run_.allocation["artwork"].sum() == 600 for run_ in result.runs.values())
    # The same kind with other settings runs beside it; the settings are the policy's own.
    both = make_policies(["lin_ucb", "lin_ucb:alpha=0"], env)
    assert [p.alpha for p in both.values()] == [0.2, 0.0]
    with pytest.raises(InvalidInputError, match="policy lin_ts: v: Input should be greater"):
        make_policies(["lin_ts:v=0"], env)


def test_campaign_policies_take_settings():
    (engine,) = make_policies(["lin_ts:v=0.5"], EmailCampaign(), seed=0).values()
    spec = engine.campaign("simulation")
    assert {s.policy.kind for s in spec.slots} == {"lin_ts"}
    assert {s.policy.v for s in spec.slots} == {0.5}
    with pytest.raises(InvalidInputError, match="policy default: takes no settings"):
        make_policies(["default:alpha=1"], EmailCampaign())


def test_lin_ucb_beats_uniform_on_the_linear_environment():
    result = run(LinearLogistic(seed=0), ["lin_ucb"], steps=5000)
    rows = {row.policy: row for row in result.summary()}
    # The threshold is well below what this budget gives: room for changes in tuning.
    assert rows["lin_ucb"].lift_vs_uniform > 0.15
    assert result.runs["lin_ucb"].regret < 0.7 * result.runs[UNIFORM].regret


def test_lin_ucb_learns_to_classify():
    # Supervised data as bandit feedback: guessing the class right is the reward. Uniform gets
    # 1/4; the classes are nearly linearly separable, so LinUCB gets most of them (0.88
    # over the second half of 4,000 rows with this seed; held to 0.75).
    env = SupervisedBandit(*gaussian_blobs(seed=0))
    result = run(env, ["lin_ucb"], steps=4000)
    curve, ends = result.runs["lin_ucb"].cumulative_expected, result.batch_ends
    late = (curve[-1] - curve[19]) / (ends[-1] - ends[19])
    assert late > 0.75
    assert result.runs[ORACLE].mean_expected == 1.0


def test_bad_arguments_raise_bandit_errors():
    env = Email()
    with pytest.raises(InvalidInputError, match="unknown policy 'nope'"):
        make_policies(["nope"], env)
    with pytest.raises(InvalidInputError, match="distinct"):
        make_policies(["lin_ucb", "lin_ucb"], env)
    with pytest.raises(InvalidInputError, match="steps"):
        simulate(env, {}, steps=0, progress=False)
    with pytest.raises(InvalidInputError, match="reserved"):
        simulate(env, {UNIFORM: make_policies(["lin_ucb"], env)["lin_ucb"]}, 10, progress=False)


def test_write_report(email_result, tmp_path):
    report = write_report(email_result, tmp_path / "out")
    assert report == tmp_path / "out" / "report.html"
    for name in ("results.json", "report.md", "report.html", "cumulative_reward.png",
                 "cumulative_regret.png", "allocation.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    page = report.read_text()
    for policy in email_result.runs:
        assert f"| {policy} |" in markdown and f"<td>{policy}</td>" in page
    assert page.count("data:image/png;base64,") == 3
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["policy"] for row in results["summary"]] == list(email_result.runs)
    assert len(results["runs"]["lin_ucb"]["cumulative_regret"]) == 30
    assert results["slots"] == {"subject_line": list(Email.FRAMINGS)}
    assert "## Per slot" in markdown and "| subject_line | lin_ucb |" in markdown
    assert "<h2>Per slot</h2>" in page


def test_cli_simulate_writes_a_report(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["simulate", "--env", "linear", "--policies", "lin_ucb, lin_ts", "--steps", "1000",
                 "--batch-size", "50", "--seed", "3", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    lines = captured.out.strip().splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"
    for policy in ("lin_ucb", "lin_ts", UNIFORM, ORACLE):
        assert policy in captured.out
    results = json.loads((out / "results.json").read_text())
    assert (results["env"], results["steps"], results["batch_size"], results["seed"]) == (
        "linear", 1000, 50, 3)
    assert list(results["runs"]) == ["lin_ucb", "lin_ts", UNIFORM, ORACLE]


def test_cli_simulate_runs_vw_with_settings(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["simulate", "--policies", "vw:exploration=bag:bag=3,lin_ucb:alpha=0.3",
                 "--steps", "300", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    results = json.loads((out / "results.json").read_text())
    assert list(results["runs"]) == ["vw:exploration=bag:bag=3", "lin_ucb:alpha=0.3", UNIFORM,
                                     ORACLE]


def test_cli_drift_sets_the_drift_over_the_run(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["simulate", "--policies", "beta_ts", "--steps", "300", "--drift",
                 "--out", str(out), "--no-progress"])
    capsys.readouterr()
    assert code == 0
    assert json.loads((out / "results.json").read_text())["drift_steps"] == 300


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--env", "nope"],
        ["simulate", "--policies", "lin_ucb,nope"],
        ["simulate", "--policies", ","],
        ["simulate", "--steps", "0"],
        ["simulate", "--steps", "many"],
        ["simulate", "--batch-size", "-1"],
        ["simulate", "--bogus"],
        ["simulate", "--out", "taken/sub"],
        ["simulate", "--delay", "-1"],
        ["simulate", "--new-arm-at", "-3"],
        ["simulate", "--env", "email4", "--policies", "nope"],
        ["simulate", "--policies", "lin_ucb:alpha=x"],
        ["simulate", "--policies", "vw:bag=0"],
        ["simulate", "--policies", "bart:alpha=1"],
        ["nope"],
    ],
)
def test_cli_bad_arguments_one_line_exit_2(args, tmp_path):
    # A fresh interpreter, as a user would run it; cwd is tmp_path so a report would land there.
    (tmp_path / "taken").write_text("a file where --out wants a directory")
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", "bandit.cli", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert completed.stderr.startswith("cmab: error: ")
    assert completed.stdout == ""
    assert not (tmp_path / "reports").exists()


def test_cli_without_arguments_shows_help(capsys):
    assert main([]) == 0
    assert "simulate" in capsys.readouterr().out


class Recorder:
    """A policy that chooses arm 0 and records, per learn call, the batch decided last and the
    batch whose rewards it learned."""

    def __init__(self):
        self.chosen = 0
        self.learned: list[tuple[int, int]] = []

    def choose_many(self, X, eligible=None):
        self.chosen += 1
        return np.zeros(X.shape[0], dtype=np.int64)

    def learn_many(self, arms, X, rewards):
        self.learned.append((self.chosen - 1, self.first_step[X[0, 1]]))


@pytest.mark.parametrize("delay", [0, 2, 7])
def test_rewards_arrive_delay_batches_late(delay):
    env = LinearLogistic(n_arms=3, dim=4, seed=5)
    recorder = Recorder()
    # Which batch a learned row came from, by its context (simulate draws them with the seed).
    X = env.contexts(500, np.random.default_rng(0))
    recorder.first_step = {X[b * 100, 1]: b for b in range(5)}
    simulate(env, {"recorder": recorder}, steps=500, batch_size=100, progress=False, delay=delay)
    # Batch b's rewards are learned right after batch b + delay is decided; later ones never.
    assert recorder.learned == [(b + delay, b) for b in range(max(5 - delay, 0))]


def test_delay_is_validated():
    with pytest.raises(InvalidInputError, match="delay"):
        simulate(Email(), {}, steps=10, progress=False, delay=-1)


@pytest.fixture(scope="module")
def campaign_engines():
    env = EmailCampaign(new_arm_at=1000)
    engines = make_policies(["bart", "default"], env, seed=0)
    result = simulate(env, engines, 3000, batch_size=200, seed=0, progress=False)
    return result, engines


@pytest.fixture(scope="module")
def campaign_result(campaign_engines):
    return campaign_engines[0]


def test_campaign_runs_through_the_engine(campaign_result):
    result = campaign_result
    assert list(result.runs) == ["bart", "default", UNIFORM, ORACLE]
    assert list(result.slots) == ["subject_line", "send_hour", "offer", "artwork"]
    assert result.new_arm == "artwork/lifestyle" and result.env_name == "email4"
    for run_ in result.runs.values():
        for slot, arms in result.slots.items():
            allocation = run_.allocation[slot]
            assert allocation.shape == (15, len(arms))
            np.testing.assert_array_equal(allocation.sum(axis=1), 200)
            assert 0.0 <= run_.oracle_agreement[slot] <= 1.0 and run_.slot_loss[slot] >= 0.0
        # The late scene is never sent before it arrives (batches 0-4 end at step 1000).
        assert (run_.allocation["artwork"][:5, -1] == 0).all()
    assert result.runs[ORACLE].regret == 0.0
    assert all(result.runs[ORACLE].oracle_agreement[slot] == 1.0 for slot in result.slots)
    assert result.runs["bart"].allocation["artwork"][5:, -1].sum() > 0
    rows = result.slot_summary()
    assert len(rows) == 4 * 4 and rows[0].slot == "subject_line" and rows[0].policy == "bart"


def test_the_campaign_learns_through_the_join(campaign_engines):
    # The engines learn the email reward from the join of their own logged decisions, the
    # sends and the simulated outcomes: every decision (delay 0: all windows closed), the
    # reward the simulator says the join learns, machine opens and scanner clicks apart.
    result, engines = campaign_engines
    for name, engine in engines.items():
        spec = engine.campaign("simulation")
        assert spec.activation == "send" and set(spec.reward.outcomes) == {
            "click", "conversion", "unsubscribe"}
        report = engine.report("simulation")
        assert report.impressions == 3000
        learned = report.groups["personalized"].reward
        assert learned == pytest.approx(result.runs[name].cumulative_reward[-1], abs=1e-9)
        assert engine.excluded["machine"] > 0 and engine.excluded["scanner"] > 0
        assert engine.excluded["unsent"] == 0
        outcomes = report.groups["personalized"].outcomes
        assert all(outcomes[kind].reached > 0 for kind in ("open", "click", "conversion"))
        assert engine.decision_sink is None  # the play's sink is removed after it
    assert list(result.reports) == ["bart", "default"]
    assert result.reports["bart"]["groups"]["personalized"]["decisions"] == 3000


def test_campaign_feedback_is_learned_delay_batches_late():
    # With a delay, batch b's outcomes close after batch b + delay is decided: the last
    # ``delay`` batches are never learned, and nothing is refused as unsent.
    env = EmailCampaign()
    for delay in (1, 3):
        engines = make_policies(["beta_ts"], env, seed=0)
        simulate(env, engines, 1000, batch_size=100, seed=0, progress=False, delay=delay)
        engine = engines["beta_ts"]
        assert engine.report("simulation").impressions == 1000 - 100 * delay
        assert engine.excluded["unsent"] == 0


def test_campaign_policies_beat_uniform(campaign_result):
    rows = {row.policy: row for row in campaign_result.summary()}
    # 3,000 decisions of the email reward (whose unsubscribe weight makes uniform's expected
    # reward close to 0): enough for bart to gain a tenth of the oracle's reward over uniform
    # and to cut a tenth of its regret, far from the oracle.
    assert rows["bart"].share_of_oracle > rows[UNIFORM].share_of_oracle + 0.1
    assert campaign_result.runs["bart"].regret < 0.9 * campaign_result.runs[UNIFORM].regret


def test_campaign_common_random_numbers(campaign_result):
    alone = run(EmailCampaign(new_arm_at=1000), ["default"], steps=3000, batch_size=200)
    for name in ("default", UNIFORM, ORACLE):
        a, b = campaign_result.runs[name], alone.runs[name]
        np.testing.assert_array_equal(a.cumulative_reward, b.cumulative_reward)
        for slot in campaign_result.slots:
            np.testing.assert_array_equal(a.allocation[slot], b.allocation[slot])


def test_campaign_policy_names_are_checked():
    with pytest.raises(InvalidInputError, match="unknown policy 'nope'.*default"):
        make_policies(["nope"], EmailCampaign())
    with pytest.raises(InvalidInputError, match="unknown policy 'default'"):
        make_policies(["default"], Email())


def test_cli_simulate_email4(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(["simulate", "--env", "email4", "--policies", "lin_ucb", "--steps", "600",
                 "--batch-size", "100", "--delay", "1", "--new-arm-at", "300", "--drift",
                 "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    assert "per slot" in captured.out and "send_hour" in captured.out
    results = json.loads((out / "results.json").read_text())
    assert (results["env"], results["delay"], results["new_arm_at"], results["drift_steps"]) == (
        "email4", 1, 300, 600)
    assert list(results["runs"]["lin_ucb"]["allocation"]) == list(results["slots"])
    assert len(results["slot_summary"]) == 4 * 3
    markdown = (out / "report.md").read_text()
    assert "## Outcomes: lin_ucb" in markdown
    for kind in ("reward", "open", "click", "conversion", "unsubscribe", "complaint", "bounce"):
        assert f"| {kind} |" in markdown
