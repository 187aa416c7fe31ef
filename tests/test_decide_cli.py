"""``cmab decide`` (``bandit.bulk``): a send list from CSV or Parquet decided in process from a
snapshot or by a real service through the client; bad rows reported by line and left out; bad
usage one line and exit code 2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from bandit.bulk import decide_file
from bandit.cli import main
from bandit.engine import Engine
from bandit.engine.decide import ValueColumns
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest
from bandit.service import create_app
from bandit.settings import Settings
from tests.bandit.engine.test_batch import spec as mix_spec
from tests.servers import live

HEADER = "user_id,engagement,recency,plan,region,consent\n"
GOOD = ["u1,0.5,1.0,pro,eu,true", "u2,0.1,,free,,false", "u3,-2,0.3,team,us,1"]


@pytest.fixture
def snapshot(tmp_path: Path, newsletter_spec) -> Path:
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(newsletter_spec("news")))
    engine.save(tmp_path / "snap.bin")
    return tmp_path / "snap.bin"


def write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    code = main(["decide", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bad_rows_are_reported_by_line_and_the_rest_decided(tmp_path, snapshot, capsys):
    source = write(tmp_path / "list.csv", [
        GOOD[0],
        ",0.2,0.0,pro,eu,true",          # line 3: no user id
        "u4,high,0.0,pro,eu,true",       # line 4: not a number
        GOOD[1],
        "u5,,0.0,pro,eu,true",           # line 6: engagement has no default
        "u6,0.1,0.0,pro,eu,maybe",       # line 7: consent
        "u7,1e300,0.0,pro,eu,true",      # line 8: beyond FEATURE_LIMIT
        GOOD[2]])
    out, errors = tmp_path / "decisions.csv", tmp_path / "bad.csv"
    code, stdout, stderr = run(capsys, "--campaign", "news", "--input", source, "--out", out,
                               "--snapshot", snapshot, "--errors", errors)
    assert code == 1 and "3 decisions" in stdout and "5 bad rows" in stdout
    for where, column in [(3, "user_id: missing"), (4, "engagement: expected a number, got "
                          "'high'"), (6, "engagement: missing"), (7, "consent: expected true "
                          "or false, got 'maybe'"), (8, "engagement: expected a finite")]:
        assert f"line {where}: {column}" in stderr
    assert pv.read_csv(errors).column("where").to_pylist() == [
        "line 3", "line 4", "line 6", "line 7", "line 8"]
    table = pv.read_csv(out)
    assert table.column_names == [
        "decision_id", "user_id", "holdout", "subject_line.arm", "subject_line.propensity",
        "artwork.arm", "artwork.propensity", "send_hour.arm", "send_hour.propensity"]
    assert table.column("user_id").to_pylist() == ["u1", "u2", "u3"]
    # u2 gave no consent: its decision id says so (an even last digit).
    assert [int(d[-1], 16) % 2 for d in table.column("decision_id").to_pylist()] == [1, 0, 1]


def test_in_process_decisions_are_the_engines_batch_decisions(tmp_path, newsletter_spec):
    """Columns read from a file decide exactly as ``Engine.decide_batch`` of the same requests
    (same seeds, same decision ids)."""
    spec = CampaignSpec.model_validate(newsletter_spec("news"))
    engines = [Engine(seed=3, id_seed=5) for _ in range(2)]
    for engine in engines:
        engine.create_campaign(spec)
    lines = [f"u{i},{i / 7 - 1:.3f},{'' if i % 3 else i / 2},{['free', 'pro', 'x'][i % 3]},"
             f"{'eu' if i % 2 else ''},{'false' if i % 5 == 0 else 'true'}" for i in range(300)]
    source = write(tmp_path / "list.csv", lines)
    out = tmp_path / "decisions.parquet"
    result = decide_file(source, out, spec, engine=engines[0])
    assert result.decided == 300 and result.refused == []
    requests = []
    for line in lines:
        user, engagement, recency, plan, region, consent = line.split(",")
        context: dict[str, Any] = {"engagement": float(engagement), "plan": plan}
        if recency:
            context["recency"] = float(recency)
        requests.append(DecisionRequest(campaign="news", user_id=user, context=context,
                                        segments={"region": region} if region else {},
                                        consent=consent == "true"))
    expected = engines[1].decide_batch("news", requests)
    table = pq.read_table(out)
    assert table.column("decision_id").to_pylist() == expected.decision_ids
    assert table.column("holdout").to_pylist() == expected.holdout.tolist()
    for s in expected.slots:
        assert table.column(f"{s.slot}.arm").to_pylist() == [s.arm_ids[a] for a in s.arms]
        assert table.column(f"{s.slot}.propensity").to_pylist() == s.propensity.tolist()


def test_parquet_in_and_csv_out_through_a_service(tmp_path, newsletter_spec, capsys):
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(newsletter_spec("news")))
    n = 2500
    source = tmp_path / "list.parquet"
    pq.write_table(pa.table({
        "user_id": [f"u{i}" if i != 7 else None for i in range(n)],
        "engagement": pa.array([i / n for i in range(n)], pa.float64()),
        "plan": ["pro"] * n, "consent": [i % 4 != 0 for i in range(n)]}), source)
    out = tmp_path / "decisions.csv"
    with live(create_app(engine, Settings())) as http:
        code, stdout, stderr = run(capsys, "--campaign", "news", "--input", source, "--out",
                                   out, "--url", http.base_url)
        # The service logged them (in process: into its own attribution join).
        logged = re.search(r"^cmab_decisions_logged_total (\S+)$", http.get("/metrics").text,
                           re.M)
        assert logged is not None and float(logged[1]) == n - 1
    assert code == 1 and "row 8: user_id: missing" in stderr
    table = pv.read_csv(out)
    assert table.num_rows == n - 1
    assert table.column("user_id").to_pylist() == [f"u{i}" for i in range(n) if i != 7]
    assert set(table.column("send_hour.arm").to_pylist()) <= {"h09", "h18"}


@pytest.mark.parametrize(("args", "message"), [
    (["--input", "{tmp}/nope.csv"], "--input {tmp}/nope.csv: no such file"),
    (["--input", "{tmp}/list.txt"], "--input {tmp}/list.txt: expected a .csv or .parquet"),
    (["--out", "{tmp}/out.json"], "--out {tmp}/out.json: expected a .csv or .parquet"),
    (["--campaign", "nope"], "no campaign 'nope'"),
    (["--input", "{tmp}/extra.csv"], "column(s) ['tenure'] are not user_id, consent"),
    (["--input", "{tmp}/short.csv"], "no column for numeric feature(s) ['engagement']"),
    (["--url", "http://127.0.0.1:1"], "exactly one of --snapshot PATH and --url URL"),
])
def test_bad_usage_is_one_line_and_exit_code_2(tmp_path, snapshot, capsys, args, message):
    write(tmp_path / "list.csv", GOOD)
    write(tmp_path / "list.txt", GOOD)
    write(tmp_path / "extra.csv", ["u1,0.5,pro,3"], "user_id,engagement,plan,tenure\n")
    write(tmp_path / "short.csv", ["u1,pro"], "user_id,plan\n")
    given = dict(zip(args[::2], args[1::2], strict=True))
    options = {"--campaign": "news", "--input": "{tmp}/list.csv", "--out": "{tmp}/out.csv",
               "--snapshot": str(snapshot), **given}
    argv = [part.format(tmp=tmp_path) for pair in options.items() for part in pair]
    code, _, stderr = run(capsys, *argv)
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert message.format(tmp=tmp_path) in stderr


def test_file_columns_decide_and_log_as_decide_batch(tmp_path):
    """The engine's columnar entry (``Engine.value_columns``, NumPy columns with labels as
    indices) decides and logs a file's rows exactly as ``decide_batch`` the same requests:
    every policy kind, eligibility on a label, a segment and a number, a defaulted numeric
    left empty, labels empty or unknown, rows without consent."""
    spec = mix_spec(0.2)
    n = 600
    engagement = [round((i % 37) / 9 - 2, 3) for i in range(n)]
    recency = [None if i % 4 == 0 else i / n for i in range(n)]
    style = [["deal", "busy", "calm", None, "other"][i % 5] for i in range(n)]
    region = [["eu", "us", None][i % 3] for i in range(n)]
    consent = [i % 7 != 0 for i in range(n)]
    source = tmp_path / "list.parquet"
    pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(n)], "engagement": engagement,
                             "recency": pa.array(recency, pa.float64()), "style": style,
                             "region": region, "consent": consent}), source)
    engines = [Engine(seed=3, id_seed=5) for _ in range(2)]
    logs: list[list[Any]] = [[], []]
    for engine, log in zip(engines, logs, strict=True):
        engine.create_campaign(spec)
        engine.decision_sink, engine.clock = log.append, lambda: 1_700_000_000_123
    out = tmp_path / "decisions.parquet"
    assert decide_file(source, out, spec, engine=engines[0]).decided == n
    requests = [DecisionRequest(
        campaign="mix", user_id=f"u{i}", consent=consent[i],
        context={"engagement": engagement[i], "recency": 0.5 if recency[i] is None
                 else recency[i]} | ({"style": style[i]} if style[i] else {}),
        segments={"region": region[i]} if region[i] else {}) for i in range(n)]
    expected = engines[1].decide_batch("mix", requests)
    table = pq.read_table(out)
    assert table.column("decision_id").to_pylist() == expected.decision_ids
    for s in expected.slots:
        assert table.column(f"{s.slot}.arm").to_pylist() == [s.arm_ids[a] for a in s.arms]
        assert table.column(f"{s.slot}.propensity").to_pylist() == s.propensity.tolist()
    (logged,), (reference_log,) = logs
    assert list(logged.lines()) == list(reference_log.lines())


@pytest.mark.parametrize(("keys", "categorical", "message"), [
    (("engagement",), {"engagement"}, "contexts: 'engagement' is no categorical feature"),
    (("plan",), set(), "contexts: 'plan' is no numeric feature"),
    (("tenure",), set(), "contexts: 'tenure' is no numeric feature of campaign 'news'"),
])
def test_value_columns_refuse_a_key_the_schema_reads_otherwise(newsletter_spec, keys,
                                                               categorical, message):
    engine = Engine(seed=0)
    engine.create_campaign(CampaignSpec.model_validate(newsletter_spec("news")))
    contexts = ValueColumns(keys, np.zeros((1, 1)), [None], frozenset(categorical))
    segments = ValueColumns((), np.zeros((1, 0)), [None], frozenset())
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        engine.value_columns("news", ["u1"], np.ones(1, bool), np.zeros(1, bool), contexts,
                             segments)
