"""The README's Python tour runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README lost its Python tour"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_quickstart_has_the_two_commands():
    text = README.read_text(encoding="utf-8")
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^make (\w+)", quickstart, flags=re.M) == ["demo", "test"]


def test_bench_table_replaces_only_between_the_markers():
    from benchmarks.report import README_END, README_START, replace_readme_table

    text = f"intro\n{README_START}\nold | table\n{README_END}\nafter\n"
    assert replace_readme_table(text, "new | table\n") == (
        f"intro\n{README_START}\nnew | table\n{README_END}\nafter\n")
    for broken in ("no markers\n", f"{README_START}\nonly the start\n",
                   f"{README_END}\n{README_START}\nreversed\n",
                   f"{README_END}\n{README_START}\nend first\n{README_END}\n",
                   f"{README_START}\na\n{README_END}\n{README_START}\nb\n{README_END}\n"):
        with pytest.raises(ValueError, match="marker lines"):
            replace_readme_table(broken, "x")


def test_readme_has_the_generated_bench_table():
    from benchmarks.report import replace_readme_table

    text = README.read_text(encoding="utf-8")
    replace_readme_table(text, "x")  # exactly one pair of markers
    assert "| ratio (same run, higher is better) |" in text
