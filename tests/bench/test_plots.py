"""Companion PNGs of benchmark tables (issue 20 item 4)."""

from __future__ import annotations

import os

from bench import plots

MD = """# x

reading text

| cell | change | acc | note |
|---|---|---|---|
| a | +1.3 [-0.3, +2.8] | 56.5 | ok |
| b | -2.0 [-4.1, -0.5] | 54.2 | - |
"""


def test_parse_table_reads_the_first_pipe_table():
    head, rows = plots.parse_table(MD)
    assert head == ["cell", "change", "acc", "note"]
    assert rows == [
        ["a", "+1.3 [-0.3, +2.8]", "56.5", "ok"],
        ["b", "-2.0 [-4.1, -0.5]", "54.2", "-"],
    ]
    kind, vals = plots._column(rows, 1)
    assert kind == "interval" and vals[1] == (-2.0, -4.1, -0.5)
    assert plots._column(rows, 2)[0] == "number" and plots._column(rows, 3)[0] is None


def test_table_png_draws_and_skips_tables_without_numbers(tmp_path):
    md = tmp_path / "r.md"
    md.write_text(MD)
    out = plots.table_png(str(md))
    assert out == str(tmp_path / "r_table.png") and os.path.getsize(out) > 1000
    (tmp_path / "t.md").write_text("| a | b |\n|---|---|\n| x | y |\n")
    assert plots.table_png(str(tmp_path / "t.md")) is None
    (tmp_path / "n.md").write_text("no table here\n")
    assert plots.table_png(str(tmp_path / "n.md")) is None
