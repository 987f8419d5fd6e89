"""MetricWriter: a partial last line is dropped, the log is cut back to a checkpoint's offset."""

import json

from train.metrics import MetricWriter, read_metrics


def test_partial_line_is_dropped_and_truncate_cuts_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
    w = MetricWriter(str(tmp_path), tensorboard=False, console=False)
    assert path.read_text() == '{"step": 1, "a": 1.0}\n'
    offset = w.offset()
    w.write(2, {"a": 2.0})
    w.write(3, {"a": 3.0})
    w.truncate(offset)
    w.write(2, {"a": 2.5})
    w.close()
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [(r["step"], r["a"]) for r in lines] == [(1, 1.0), (2, 2.5)]


def test_read_metrics_skips_broken_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\nnot json\n[1]\n{"step": 1, "b": 2.0}\n{"st')
    assert read_metrics(str(path)) == [{"step": 1, "a": 1.0, "b": 2.0}]
