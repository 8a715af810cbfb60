"""curves.png: metrics.jsonl per global step and the rewards per stage, beside report.md, which links it."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from vipkit.curves import global_steps, metric_names, read_metrics
from vipkit.report import write_report


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def assert_sensible_png(path: Path) -> None:
    from matplotlib.image import imread

    width, height = png_size(path)
    assert 800 <= width <= 3000 and 300 <= height <= 4000, (width, height)
    assert 10_000 < path.stat().st_size < 3_000_000
    pixels = imread(path)  # decodes whole
    assert pixels.shape[:2] == (height, width) and pixels.std() > 0.01  # not blank


def test_global_steps_put_the_stages_end_to_end(tmp_path):
    lines = [{"stage": 1, "step": s, "loss": 1.0 + s} for s in range(3)]
    lines += [
        {"stage": 2, "step": 0, "loss": 9.0},
        {"stage": 2, "step": 0, "loss": 5.0, "lr": 0.1},
    ]  # redone: last wins
    lines += [{"stage": 4, "step": s, "loss": 0.5, "grad_norm": 2.0} for s in range(2)]  # stage 3 trained nothing
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"stage": 4, "st')  # a torn last line
    records = read_metrics(path)
    assert [(r["stage"], r["step"]) for r in records] == [(1, 0), (1, 1), (1, 2), (2, 0), (4, 0), (4, 1)]
    assert records[3]["loss"] == 5.0
    assert global_steps(records) == [0, 1, 2, 3, 4, 5]
    assert metric_names(records) == ["loss", "grad_norm", "lr"]  # the learning rate last
    assert read_metrics(tmp_path / "none.jsonl") == []


def test_a_run_writes_curves_png_and_its_report_links_it(micro_reference, tmp_path):
    assert_sensible_png(micro_reference / "curves.png")
    report = (micro_reference / "report.md").read_text()
    assert "## Curves" in report and "](curves.png)" in report
    # a run that trained nothing still gets its rewards per stage drawn
    results = json.loads((micro_reference / "results.json").read_text())
    shutil.copy(micro_reference / "results.json", tmp_path / "results.json")
    write_report(results, tmp_path / "report.md")
    assert_sensible_png(tmp_path / "curves.png")
    assert "](curves.png)" in (tmp_path / "report.md").read_text()
    assert not list(tmp_path.glob(".*.tmp"))
