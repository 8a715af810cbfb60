"""``vipkit bench``: models side by side on the same prompts, seeds and rewards; bad matrices name their keys."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_vipkit

from vipkit.bench_matrix import load_matrix
from vipkit.errors import VipkitError
from vipkit.interfaces import mean_scores
from vipkit.media import eight_bit
from vipkit.plugins import load_plugins
from vipkit.saved_model import save_model

TINY = 'name = "animatediff"\npreset = "tiny"\nheight = 16\nwidth = 16\nnum_frames = 4\nnum_inference_steps = 2\n'
PROMPTS = ["a red ball rolling left", "a white star spinning"]


def matrix_text(extra: str = "") -> str:
    return (
        f"seed = 3\n[prompts]\neval = {json.dumps(PROMPTS)}\n"
        f'[[models]]\nlabel = "teacher"\n{TINY}'
        '[[models]]\nlabel = "pruned"\npath = "pruned"\n'
        '[[rewards]]\nname = "clip"\npreset = "tiny"\n'
        '[[rewards]]\nname = "clip"\nas = "clip2"\npreset = "tiny"\nframes = 2\n' + extra
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A matrix file next to a saved pruned copy of the tiny teacher."""
    folder = tmp_path_factory.mktemp("bench")
    matrix = folder / "matrix.toml"
    matrix.write_text(matrix_text())
    options = {"preset": "tiny", "height": 16, "width": 16, "num_frames": 4, "num_inference_steps": 2}  # as TINY
    teacher = load_plugins().registry("models").get("animatediff").from_options(options)
    pruned = teacher.copy()
    pruned.remove_block(pruned.blocks()[0].name)
    save_model(pruned, folder / "pruned")
    return folder


def test_bench_scores_every_model_as_a_direct_call_would_and_resumes_with_finished_rows(folder):
    out = folder / "out"
    result = run_vipkit("bench", "--matrix", str(folder / "matrix.toml"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((out / "bench.json").read_text())
    teacher_row, pruned_row = bench["models"]
    assert (teacher_row["label"], pruned_row["label"]) == ("teacher", "pruned")
    assert pruned_row["parameters"] < teacher_row["parameters"]

    matrix = load_matrix(folder / "matrix.toml")  # the same videos and scores, computed here by hand
    plugins = load_plugins()
    reward = matrix.reward.build(plugins)
    for row, model in zip(bench["models"], matrix.models, strict=True):
        videos = eight_bit(model.build(plugins).generate(PROMPTS, [3, 4]).videos)  # scored as a run scores them
        expected = mean_scores(reward.score(videos, PROMPTS))
        assert row["scores"] == pytest.approx(expected, abs=1e-6)
        assert row["objective"] == pytest.approx(sum(expected.values()) / len(expected), abs=1e-6)
    dims = list(teacher_row["scores"])
    assert dims == ["clip.clip_score", "clip.frame_consistency", "clip2.clip_score", "clip2.frame_consistency"]

    table = (out / "bench.md").read_text()
    assert (
        f"| pruned | {pruned_row['parameters']:,} | {100 * pruned_row['parameters'] / teacher_row['parameters']:.1f} |"
        in table
    )
    bars = [e for e in ET.parse(out / "bench.svg").getroot() if e.get("class") == "bar"]
    assert len(bars) == 2 * (len(dims) + 1)
    plotted = {(b.get("data-group"), float(b.get("data-value"))) for b in bars}
    assert ("objective", float(f"{pruned_row['objective']:.6g}")) in plotted
    samples = ["000-teacher.gif", "000-teacher.mp4", "001-pruned.gif", "001-pruned.mp4"]  # a GIF and an MP4 each
    assert sorted(p.name for p in (out / "samples").iterdir()) == samples
    assert result.stdout.count("| teacher |") == 1

    # resumed: both rows reused; new objective weights re-weigh the stored scores without rendering again
    (folder / "matrix.toml").write_text(matrix_text('[objective]\nweights = { "clip2.frame_consistency" = 1.0 }\n'))
    again = run_vipkit("bench", "--matrix", str(folder / "matrix.toml"), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing its stored") == 2 and "building" not in again.stderr
    reweighed = json.loads((out / "bench.json").read_text())["models"]
    assert [r["objective"] for r in reweighed] == [r["scores"]["clip2.frame_consistency"] for r in bench["models"]]
    (folder / "matrix.toml").write_text(matrix_text())


BAD = [
    ('seed = 1\n[prompts]\neval = ["a"]\n[reward]\nname = "clip"\n', ["models: add one [[models]] table"]),
    (
        matrix_text().replace('label = "pruned"', 'label = "teacher"'),
        ["models[1].label: 'teacher' is already the label"],
    ),
    (
        matrix_text().replace('path = "pruned"', 'path = "nowhere"'),
        ["models[1].path:", "is not a model saved or exported by vipkit"],
    ),
    (
        matrix_text().replace('path = "pruned"', 'path = "pruned"\nheight = 8'),
        ["models[1]: a saved model (`path`) takes no other options, got height"],
    ),
    (
        matrix_text().replace('preset = "tiny"\nheight', 'preset = "tiny"\nheigth'),
        ["models[0].heigth: unknown option; did you mean 'height'?"],
    ),
    (matrix_text().replace('label = "teacher"\n', ""), ["models[0].label: required"]),
    (matrix_text() + "[train]\nepochs = 1\n", ["train: unknown key"]),
    (matrix_text().replace("[prompts]\neval", "[prompts]\nevals"), ["prompts.evals: unknown option"]),
    (matrix_text() + '[objective]\nweights = { "clip.nope" = 1.0 }\n', ["objective.weights.clip.nope: reward"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_bad_matrix_names_every_problem_with_its_key(folder, tmp_path, text, expected):
    path = folder / f"bad-{abs(hash(text))}.toml"
    path.write_text(text)
    with pytest.raises(VipkitError) as info:
        load_matrix(path)
    assert all(part in str(info.value) for part in expected), str(info.value)
    assert str(info.value).startswith(f"bench matrix {path} has")


def test_a_bad_matrix_exits_2_and_writes_nothing(folder, tmp_path):
    path = folder / "broken.toml"
    path.write_text(matrix_text().replace('path = "pruned"', 'path = "nowhere"'))
    result = run_vipkit("bench", "--matrix", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "models[1].path" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bench_row_may_be_an_export_and_scores_as_the_model_it_came_from(folder, tmp_path):
    from vipkit.export import export_model

    export_model(folder / "pruned", "diffusers", tmp_path / "exported")
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        f"seed = 3\n[prompts]\neval = {json.dumps(PROMPTS)}\n"
        f'[[models]]\nlabel = "pruned"\npath = "{folder / "pruned"}"\n'
        '[[models]]\nlabel = "exported"\npath = "exported"\n'
        '[reward]\nname = "clip"\npreset = "tiny"\n'
    )
    result = run_vipkit("bench", "--matrix", str(matrix), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    pruned, exported = json.loads((tmp_path / "out" / "bench.json").read_text())["models"]
    assert exported["parameters"] == pruned["parameters"]  # the zeroed block removed again on loading
    assert exported["scores"] == pytest.approx(pruned["scores"], abs=1e-6)
    damaged = next((tmp_path / "out" / "models").glob("000-*.json"))
    damaged.write_text('{"identity": ')  # a torn row: measured again, never a traceback
    again = run_vipkit("bench", "--matrix", str(matrix), "--out", str(tmp_path / "out"))
    assert again.returncode == 0 and f"{damaged} is damaged: measuring that model again" in again.stderr, again.stderr
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["models"][0]["scores"] == pruned["scores"]
    card_export = export_model(folder / "pruned", "diffusers", tmp_path / "carded", bench=tmp_path / "out")
    card = (tmp_path / "carded" / "README.md").read_text()
    assert card_export["format"] == "diffusers" and "## Held-out benchmark (`vipkit bench`)" in card
    assert f"| exported | {exported['parameters']:,} |" in card
