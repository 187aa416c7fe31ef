"""benchmarks.report on a tiny synthetic pytest-benchmark JSON: measurements, same-run ratios,
targets, extra tables, and the README written only from a complete full run."""

import json

import pytest

from benchmarks import report
from benchmarks.report import README_END, README_START, main


def _entry(stats_min, *measurements, tables=()):
    return {"stats": {"min": stats_min}, "extra_info": {"measurements": list(measurements),
                                                        "tables": list(tables)}}


def _m(bench, case, n, unit, *, workload="W1", seconds=None, target=None, ratios=(),
       rounds=None, note="", mean_reward=None):
    return {"bench": bench, "case": case, "workload": workload, "n": n, "unit": unit,
            "seconds": seconds, "scale": 1.0, "note": note, "mean_reward": mean_reward,
            "target": target, "ratios": list(ratios), "rounds": rounds}


def _ratio(what, over, **kw):
    return {"what": what, "over": over, "workload": None, "bench": None, "target": None,
            "note": "", "by": "speed", "factor": 1.0, **kw}


def _run(quick, benches=("learning",)):
    entries = [
        _entry(0.002, _m("learning", "REFERENCE loop", 1000, "events/s")),
        # 4 us/event against the reference's 2 ms / 1000 = 2 us/event: 0.5x, target 0.4 met.
        _entry(0.004, _m("learning", "policy", 1000, "us/event", target=["<=", 3.0],
                         mean_reward=0.25,
                         ratios=[_ratio("policy / reference", "REFERENCE loop", target=0.4),
                                 _ratio("policy / absent peer", "not installed")])),
        _entry(9.0, _m("worker", "raw", 100, "decisions/s", workload="S4", seconds=1.0,
                       rounds=[1.0, 1.0, 2.0]),
               _m("worker", "worker", 100, "decisions/s", workload="S4", seconds=4.0,
                  rounds=[4.0, 2.0, 4.0],
                  ratios=[_ratio("worker / raw", "raw", by="paired", target=1.0)]),
               tables=[{"title": "Learning quality", "head": ["env", "reward"],
                        "rows": [["digits", "0.85"]], "note": "3 seeds"}]),
    ]
    entries += [_entry(1.0, _m(b, "x", 1, "s")) for b in benches]
    info = {"processor": "cpu", "machine": "x86_64", "cores": "2", "python": "3.11",
            "numpy": "2", "numba": "0.68", "scipy": "1", "mabwiser": "2.7",
            "vowpalwabbit": "9", "bayesianbandits": "1.5", "obp": "0.4.1", "blas": "openblas x1",
            "quick": quick}
    return {"datetime": "2026-12-03T00:00:00", "machine_info": {"bench": info},
            "benchmarks": entries}


def test_ratios_and_targets_come_from_the_json(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_run(quick=True)))
    main([str(path), "--out", str(tmp_path / "out"), "--quiet"])
    latest = json.loads((tmp_path / "out" / "latest.json").read_text())
    values = {m["case"]: (m["value"], m["met"]) for m in latest["measurements"]}
    assert values["REFERENCE loop"] == (pytest.approx(500_000.0), None)
    assert values["policy"] == (pytest.approx(4.0), False)  # 4 us/event, target <= 3 us
    assert values["worker"][0] == 25.0  # the median round's seconds
    ratios = {r["what"]: r for r in latest["ratios"]}
    assert set(ratios) == {"policy / reference", "worker / raw"}  # absent peers are skipped
    assert ratios["policy / reference"]["value"] == pytest.approx(0.5)
    assert ratios["policy / reference"]["met"] is True
    # Per round: 1/4, 1/2, 2/4: median 0.5, and the spread is in the note.
    assert ratios["worker / raw"]["value"] == pytest.approx(0.5)
    assert ratios["worker / raw"]["met"] is False
    assert "min 0.25x, median 0.5x, max 0.5x" in ratios["worker / raw"]["note"]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "Quick run" in table
    assert "| learning | W1 | policy / reference | 0.5x | >= 0.4x met |  |" in table
    assert "**Learning quality** 3 seeds" in table and "| digits | 0.85 |" in table
    assert "| learning | W1 | policy | 4 us/event | 1,000 | <= 3 us/event missed |" in table


def _readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\nafter\n")
    return readme


def test_the_readme_takes_only_a_complete_full_run(tmp_path, capsys):
    readme = _readme(tmp_path)
    path = tmp_path / "bench.json"
    for run, why in ((_run(quick=True, benches=report.BENCHES), "a quick run"),
                     (_run(quick=False), "benchmarks missing")):
        path.write_text(json.dumps(run))
        with pytest.raises(SystemExit) as exc:
            main([str(path), "--readme", str(readme), "--out", str(tmp_path), "--quiet"])
        assert exc.value.code == 2 and why in capsys.readouterr().err
        assert "old table" in readme.read_text()

    path.write_text(json.dumps(_run(quick=False, benches=report.BENCHES)))
    main([str(path), "--readme", str(readme), "--out", str(tmp_path), "--quiet"])
    text = readme.read_text()
    assert text.startswith(f"intro\n{README_START}\nRun of 2026-12-03 on cpu")
    assert text.endswith(f"</details>\n{README_END}\nafter\n")
    assert "old table" not in text and "| policy / reference | 0.5x |" in text
