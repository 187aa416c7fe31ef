"""The Open Bandit Dataset loader: the real sample (downloaded once into ~/.cache/cmab/obd),
its counts and checksums, the estimators on it, and bad files."""

import hashlib
import json
import zipfile

import numpy as np
import pytest

from bandit.errors import InvalidInputError
from simulators.offline import obd, ope

# Clicks per log of the sample (random, bts), counted in the CSVs.
CLICKS = {"all": (38, 42), "men": (46, 69), "women": (46, 46)}


@pytest.fixture(scope="session")
def wheel():
    return obd.fetch_wheel()


@pytest.fixture(scope="session")
def logs_all(wheel):
    return obd.load_obd("all", wheel=wheel)


@pytest.mark.parametrize("campaign", obd.CAMPAIGNS)
def test_counts_clicks_and_shared_encoding(wheel, campaign):
    logs = obd.load_obd(campaign, wheel=wheel)
    random, bts = logs["random"], logs["bts"]
    assert random.n == bts.n == 10_000
    assert random.n_actions == bts.n_actions == obd.N_ITEMS[campaign]
    assert (random.rewards.sum(), bts.rewards.sum()) == CLICKS[campaign]
    assert random.is_uniform() and not bts.is_uniform()
    assert random.context_names == bts.context_names
    np.testing.assert_array_equal(random.action_features, bts.action_features)
    # One-hot blocks: intercept + one value per user feature + one position.
    np.testing.assert_array_equal(random.X.sum(axis=1), 1 + obd.N_USER_FEATURES + 1)
    assert set(np.unique(random.position)) == {0, 1, 2}


def test_checksums_are_the_documented_ones(wheel):
    with zipfile.ZipFile(wheel) as archive:
        for (behavior, campaign), digest in obd.SHA256.items():
            raw = archive.read(f"obp/dataset/obd/{behavior}/{campaign}/{campaign}.csv")
            assert hashlib.sha256(raw).hexdigest() == digest


def test_on_policy_ctrs_are_reproduced_across_logs(logs_all):
    random, bts = logs_all["random"], logs_all["bts"]
    # The random policy's CTR, estimated from the bts log, against its own log's CTR.
    uniform = np.full((bts.n, bts.n_actions), 1.0 / bts.n_actions)
    from_bts = ope.evaluate(bts, uniform, ("ips", "snips"), n_boot=1000, seed=1)
    for estimate in from_bts.values():
        assert estimate.low <= random.rewards.mean() <= estimate.high, estimate
    # The bts policy's CTR, estimated from the random log. Replay by rejection keeps about
    # 10,000 / 80 = 125 events, half a click expected: it cannot say anything here (0 clicks,
    # interval [0, 0]); IPS uses every event, weighted by the bts table.
    table = obd.logged_policy_table(bts, random)
    from_random = ope.evaluate(random, table, ("ips", "snips", "dr"), n_boot=1000, seed=2)
    for estimate in from_random.values():
        assert estimate.low <= bts.rewards.mean() <= estimate.high, estimate
    assert ope.replay(random, table, n_boot=10, seed=3).estimate.n_events < 200
    # On its own log, a logged policy's table gives back its on-policy CTR exactly (SNIPS of the
    # behaviour policy is the plain mean when the target is the logging distribution).
    own = ope.evaluate(random, np.full((random.n, random.n_actions), 1 / 80), ("ips",), n_boot=10)
    assert own["ips"].value == pytest.approx(random.rewards.mean())


def _csv(n_items=2, rows=None):
    header = ",".join(obd._header(n_items))
    good = ["0,2019-11-24 00:00:00+00:00,1,2,0,0.5,a,b,c,d,0.0,1.0",
            "1,2019-11-24 00:00:01+00:00,0,1,1,0.5,a,b,e,d,0.0,0.0"]
    return "\n".join([header] + (rows or good)) + "\n"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1,t,0,1,1,nan,a,b,c,d,0,0", r"row 1: propensity_score: expected a finite number"),
        ("1,t,0,1,1,0,a,b,c,d,0,0", r"row 1: propensity_score: .* got '0'"),
        ("1,t,0,1,1,1.5,a,b,c,d,0,0", r"row 1: propensity_score: .* got '1.5'"),
        ("1,t,2,1,1,0.5,a,b,c,d,0,0", r"row 1: item_id: expected an integer in 0..1, got '2'"),
        ("1,t,0,4,1,0.5,a,b,c,d,0,0", r"row 1: position: expected an integer in 1..3"),
        ("1,t,0,1,0.5,0.5,a,b,c,d,0,0", r"row 1: click: expected an integer in 0..1"),
        ("1,t,0,1,1,0.5,a,,c,d,0,0", r"row 1: user_feature_1: empty"),
        ("1,t,0,1,1,0.5,a,b,c,d,0,NaN", r"row 1: user-item_affinity_1: expected a finite number"),
        ("1,t,0,1,1,0.5,a,b,c,d,0", r"row 1: expected 12 cells, got 11"),
    ],
)
def test_bad_rows_are_named(row, message):
    text = _csv(rows=["0,t,1,2,0,0.5,a,b,c,d,0.0,1.0", row])
    with pytest.raises(InvalidInputError, match=message):
        obd.parse_log(text, 2, "random/all/all.csv")


def test_wrong_columns_and_checksum_are_refused(tmp_path):
    text = _csv().replace("propensity_score", "pscore")
    with pytest.raises(InvalidInputError, match=r"wrong columns: missing \['propensity_score'\], "
                                                r"unexpected \['pscore'\]"):
        obd.parse_log(text, 2, "x.csv")
    fake = tmp_path / "obp-0.4.1-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        for behavior in obd.BEHAVIORS:
            archive.writestr(f"obp/dataset/obd/{behavior}/men/men.csv", _csv())
    with pytest.raises(InvalidInputError, match=r"random/men/men.csv: sha256 [0-9a-f]{64}, "
                                                r"expected ede6d08c"):
        obd.load_obd("men", wheel=fake)
    assert obd.fetch_wheel(tmp_path) == fake  # a cached wheel is not downloaded again
    with pytest.raises(InvalidInputError, match="campaign: expected one of all, men, women"):
        obd.load_obd("kids", wheel=fake)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="not a readable wheel"):
        obd.load_obd("men", wheel=bad)


def test_logged_policy_table_is_the_per_position_share(logs_all):
    random, bts = logs_all["random"], logs_all["bts"]
    table = obd.logged_policy_table(bts, random)
    assert table.shape == (random.n, random.n_actions)
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    first = np.flatnonzero(random.position == 0)[0]
    at_top = bts.actions[bts.position == 0]
    np.testing.assert_allclose(table[first], np.bincount(at_top, minlength=80) / len(at_top))


def test_cmab_replay_on_obd_writes_the_report(wheel, tmp_path, capsys):
    from bandit.cli import main

    out = tmp_path / "report"
    code = main(["replay", "--dataset", "obd", "--campaign", "men", "--behavior", "random",
                 "--policy", "lin_ucb,bts_logged,random_logged,vw:exploration=epsilon,"
                 "hybrid_lin_ucb:alpha=0.3,l2=2", "--estimators",
                 "replay,ips,snips,dm,dr", "--n-boot", "200", "--out", str(out),
                 "--cache-dir", str(wheel.parent), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"report.html", "report.md", "results.json",
                                              "estimates.png", "cumulative_reward.png",
                                              "allocation.png"}
    results = json.loads((out / "results.json").read_text())
    assert results["on_policy"]["value"] == pytest.approx(46 / 10_000)
    assert set(results["estimates"]) == {"lin_ucb", "bts_logged", "random_logged",
                                         "vw:exploration=epsilon", "hybrid_lin_ucb:alpha=0.3:l2=2"}
    for policy in ("lin_ucb", "vw:exploration=epsilon", "hybrid_lin_ucb:alpha=0.3:l2=2"):
        assert set(results["estimates"][policy]) == {"replay", "ips", "snips", "dm", "dr"}
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "| bts_logged | ips |" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "obd", "--behavior", "bts", "--estimators", "replay"],
         "replay: obd/bts/all was not logged uniformly"),
        (["--dataset", "obd", "--policy", "lin_ucb,nope"], "--policy: unknown policy 'nope'"),
        # A policy's settings are checked by its own spec: the policy and the key are named.
        (["--dataset", "obd", "--policy", "lin_ucb:alpha=-1"],
         "--policy: policy lin_ucb: alpha: Input should be greater than or equal to 0, got -1"),
        (["--dataset", "obd", "--policy", "lin_ts,lin_ucb:alpha=0.3,apha=2"],
         "--policy: policy lin_ucb: apha: unknown setting; expected one of alpha, l2, epsilon"),
        (["--dataset", "obd", "--policy", "vw:bag=x"], "--policy: policy vw: bag: Input should "
                                                       "be a valid number"),
        (["--dataset", "obd", "--policy", "uniform:alpha=1"],
         "--policy: policy uniform: takes no settings"),
        (["--dataset", "obd", "--policy", "lin_ucb:alpha=1,lin_ucb:alpha=1"],
         "--policy: policies must be distinct"),
        (["--dataset", "obd", "--estimators", "ips,foo"], "estimators: expected some of"),
        (["--dataset", "obd", "--campaign", "kids"], "campaign: expected one of"),
        (["--dataset", "mnist"], "--dataset: expected obd"),
        (["--dataset", "joined"], "--dataset joined: needs --log FILE"),
        ([], "give exactly one of --dataset obd and --log FILE"),
    ],
)
def test_cmab_replay_bad_arguments_are_one_line(wheel, tmp_path, capsys, args, message):
    from bandit.cli import main

    code = main(["replay", *args, "--cache-dir", str(wheel.parent), "--out", str(tmp_path),
                 "--no-progress", "--n-boot", "10"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
