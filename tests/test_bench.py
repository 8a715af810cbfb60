"""``vipkit bench``: models side by side on the same prompts, seeds and rewards; bad matrices name their keys."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_vipkit

import vipkit
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
        f"| pruned | not recorded | not recorded | {pruned_row['parameters']:,} | "
        f"{100 * pruned_row['parameters'] / teacher_row['parameters']:.1f} |" in table
    )  # a folder saved without a record of its making
    assert f"| teacher | teacher | — | {teacher_row['parameters']:,} | 100.0 |" in table
    assert (teacher_row["error"], pruned_row["error"], bench["failed"]) == (None, None, [])
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
    damaged = sorted((tmp_path / "out" / "models").glob("*.json"))[0]
    damaged.write_text('{"identity": ')  # a torn row: measured again, never a traceback
    again = run_vipkit("bench", "--matrix", str(matrix), "--out", str(tmp_path / "out"))
    assert again.returncode == 0 and f"{damaged} is damaged: measuring that model again" in again.stderr, again.stderr
    assert json.loads((tmp_path / "out" / "bench.json").read_text())["models"][0]["scores"] == pruned["scores"]
    card_export = export_model(folder / "pruned", "diffusers", tmp_path / "carded", bench=tmp_path / "out")
    card = (tmp_path / "carded" / "README.md").read_text()
    assert card_export["format"] == "diffusers" and "## Held-out benchmark (`vipkit bench`)" in card
    assert f"| exported | not recorded | not recorded | {exported['parameters']:,} |" in card


# -- rows keyed by what made them, per reward part; failing rows; provenance ------------------------------------

CLIP = '[[rewards]]\nname = "clip"\npreset = "tiny"\n'
CLIP2 = '[[rewards]]\nname = "clip"\nas = "clip2"\npreset = "tiny"\nframes = 2\n'
CLIP3 = '[[rewards]]\nname = "clip"\nas = "clip3"\npreset = "tiny"\nframes = 3\n'
TEACHER_ONLY = f'seed = 3\n[prompts]\neval = {json.dumps(PROMPTS)}\n[[models]]\nlabel = "teacher"\n{TINY}'


def bench_here(folder: Path, text: str, out: Path, plugins=None) -> tuple[dict, str]:
    """``run_bench`` in this process (no CLI start-up): the results and the log."""
    from vipkit.bench import run_bench

    path = folder / "here.toml"
    path.write_text(text)
    lines: list[str] = []
    results = run_bench(load_matrix(path, plugins), out, lines.append, plugins=plugins)
    return results, "\n".join(lines)


def test_a_changed_reward_is_scored_alone_on_the_stored_videos_and_only_the_matrix_columns_are_shown(tmp_path):
    import shutil

    out = tmp_path / "out"
    first, log = bench_here(tmp_path, TEACHER_ONLY + CLIP + CLIP2, out)
    assert "building" in log and len(list((out / "videos").glob("*.safetensors"))) == 1
    scores = first["models"][0]["scores"]

    # the case: the same --out benched by a matrix with fewer rewards shows only its own columns
    fewer, log = bench_here(tmp_path, TEACHER_ONLY + CLIP, out)
    assert "building" not in log and "reusing its stored videos' scores" in log
    assert fewer["columns"] == ["clip.clip_score", "clip.frame_consistency"]
    (row,) = fewer["models"]
    assert row["scores"] == {k: v for k, v in scores.items() if k.startswith("clip.")}
    assert row["objective"] == pytest.approx((scores["clip.clip_score"] + scores["clip.frame_consistency"]) / 2)
    assert "clip2" not in (out / "bench.md").read_text() and "clip2" not in json.dumps(fewer["models"])

    # the reverse: a new part is scored on the stored videos (the model is not built), the others reused
    more, log = bench_here(tmp_path, TEACHER_ONLY + CLIP + CLIP3, out)
    assert "building" not in log and "reusing the stored scores of 1 reward part(s), scoring clip3 ('clip')" in log
    assert more["columns"] == [*fewer["columns"], "clip3.clip_score", "clip3.frame_consistency"]
    assert {k: more["models"][0]["scores"][k] for k in fewer["columns"]} == row["scores"]
    (stored,) = (out / "models").glob("*.json")
    assert len(json.loads(stored.read_text())["parts"]) == 3  # clip, clip2 and clip3, each under its own identity

    # a single [reward] with the same options is the same part: plain dimension names, nothing scored
    single, log = bench_here(tmp_path, TEACHER_ONLY + '[reward]\nname = "clip"\npreset = "tiny"\n', out)
    assert "scoring" not in log and single["columns"] == ["clip_score", "frame_consistency"]
    assert single["models"][0]["scores"] == {
        "clip_score": scores["clip.clip_score"],
        **{"frame_consistency": scores["clip.frame_consistency"]},
    }

    # without its stored videos a row still reuses its scores; a new part renders them again (the same bytes on a CPU)
    shutil.rmtree(out / "videos")
    _, log = bench_here(tmp_path, TEACHER_ONLY + CLIP + CLIP2, out)
    assert "building" not in log
    renamed = TEACHER_ONLY.replace('label = "teacher"', 'label = "renamed"')
    _, log = bench_here(tmp_path, renamed + CLIP + CLIP2.replace("frames = 2", "frames = 1"), out)
    assert "renamed: building" in log and "reusing the stored scores of 1 reward part(s)" in log
    assert "differ from the stored ones" not in log and (out / "samples" / "000-renamed.gif").exists()

    # the model is part of the key: other options are another model, rendered anew
    _, log = bench_here(
        tmp_path, (TEACHER_ONLY + CLIP).replace("num_inference_steps = 2", "num_inference_steps = 3"), out
    )
    assert "teacher: building" in log and len(list((out / "videos").glob("*.safetensors"))) == 2


def test_a_row_is_keyed_by_content_not_by_where_the_model_lies(folder, tmp_path):
    import shutil

    from vipkit.bench_matrix import BenchModel, source_identity

    plugins = load_plugins()
    shutil.copytree(folder / "pruned", tmp_path / "moved")
    assert BenchModel("a", path=folder / "pruned").identity(plugins) == BenchModel(
        "b", path=tmp_path / "moved"
    ).identity(plugins)
    plain = tmp_path / "plain"  # a folder vipkit did not write: its files' sizes and modification times
    plain.mkdir()
    (plain / "weights.safetensors").write_bytes(b"1234")
    before = source_identity(str(plain))
    (plain / "weights.safetensors").write_bytes(b"12345")
    assert source_identity(str(plain)) != before and source_identity("float32") is None
    assert source_identity("nobody-here/no-such-model") == {"hub": "nobody-here/no-such-model", "revision": None}
    teacher = load_matrix(folder / "matrix.toml").models[0]
    assert teacher.identity(plugins)["options"]["preset"] == "tiny"


class Flaky(vipkit.RewardModel):
    """A reward that fails until ``Flaky.down`` is False (a reward server that comes back)."""

    name = "flaky"
    dimensions = ("brightness",)
    down = True

    def score(self, videos, prompts):
        if Flaky.down:
            raise VipkitError("the reward server is down")
        return {"brightness": videos.mean(dim=(1, 2, 3, 4))}


class RegistersFlaky:
    @vipkit.hookimpl
    def register_rewards(self, register):
        register(Flaky)


def test_a_reward_part_that_fails_marks_the_row_keeps_the_other_parts_and_is_retried_alone(tmp_path):
    from vipkit.plugins import DEFAULT_PLUGINS, discover_plugins

    plugins = discover_plugins(DEFAULT_PLUGINS, include_entry_points=False)
    plugins.add(RegistersFlaky(), name="flaky_plugin", version="1.0")
    text = TEACHER_ONLY + CLIP + '[[rewards]]\nname = "flaky"\n'
    Flaky.down = True
    failed, _ = bench_here(tmp_path, text, tmp_path / "out", plugins)
    (row,) = failed["models"]
    assert failed["failed"] == ["teacher"] and row["objective"] is None
    assert row["error"].startswith("models[0] ('teacher'): scoring with reward flaky ('flaky'): reward 'flaky'")
    assert "the reward server is down" in row["error"] and list(row["scores"]) == [
        "clip.clip_score",
        "clip.frame_consistency",
    ]
    table = (tmp_path / "out" / "bench.md").read_text()
    assert "| — | failed |" in table and f"## Failed rows\n\n- **teacher**: {row['error']}\n" in table

    Flaky.down = False
    fixed, log = bench_here(tmp_path, text, tmp_path / "out", plugins)
    assert "building" not in log and "scoring flaky ('flaky')" in log and fixed["failed"] == []
    assert fixed["models"][0]["error"] is None and "Failed rows" not in (tmp_path / "out" / "bench.md").read_text()
    assert {k: v for k, v in fixed["models"][0]["scores"].items() if k.startswith("clip.")} == row["scores"]


def test_a_model_that_fails_to_load_is_marked_the_rest_completes_exit_3_and_a_rerun_retries_it_alone(folder, tmp_path):
    from vipkit.saved_model import load_saved_model

    other = load_saved_model(folder / "pruned")  # another model than the other rows
    other.remove_block(other.blocks()[-1].name)
    save_model(other, tmp_path / "broken")
    weights = next((tmp_path / "broken").rglob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[:-4] + b"XXXX")  # altered bytes: refused by the manifest's digest
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        f'seed = 3\n[prompts]\neval = {json.dumps(PROMPTS)}\n[[models]]\nlabel = "teacher"\n{TINY}'
        f'[[models]]\nlabel = "broken"\npath = "broken"\n[[models]]\nlabel = "pruned"\npath = "{folder / "pruned"}"\n'
        + CLIP
    )
    out = tmp_path / "out"
    result = run_vipkit("bench", "--matrix", str(matrix), "--out", str(out))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "1 of 3 rows failed" in result.stderr
    bench = json.loads((out / "bench.json").read_text())
    teacher, broken, pruned = bench["models"]
    assert bench["failed"] == ["broken"] and teacher["error"] is None and pruned["error"] is None
    assert broken["error"].startswith("models[1] ('broken'): building the model: ") and weights.name in broken["error"]
    assert broken["parameters"] is None and broken["scores"] == {} and pruned["objective"] is not None
    assert f"- **broken**: {broken['error']}" in (out / "bench.md").read_text()
    assert "| broken | not recorded | not recorded | — | — | — | — | — | failed |" in result.stdout

    weights.write_bytes(good)
    again = run_vipkit("bench", "--matrix", str(matrix), "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing its stored") == 2 and again.stderr.count("building") == 1
    assert "broken: building" in again.stderr
    assert json.loads((out / "bench.json").read_text())["models"][1]["objective"] is not None


def test_a_compressed_model_records_its_recipe_its_export_copies_it_and_bench_shows_it(folder, tmp_path):
    from vipkit.export import export_model
    from vipkit.provenance import guided_by, run_provenance
    from vipkit.recipe import load_recipe
    from vipkit.saved_model import load_saved_model

    class Teacher:
        def source_models(self):
            return []

    recipes = Path(__file__).parents[1] / "recipes"
    recipe = load_recipe(recipes / "tiny_vip.toml")
    record = run_provenance(recipe, Teacher(), trained=True)
    assert (record["trained_scope"], record["base_models"]) == ("motion", [])
    assert record["recipe"] == {"file": "tiny_vip.toml", "fingerprint": recipe.fingerprint(), "seed": 0}
    provider = load_plugins().provider("rewards", "clip")
    assert record["rewards"] == [
        {"as": None, "name": "clip", "config": recipe.reward.config.model_dump(mode="json"), "provider": provider}
    ]
    assert record["objective_weights"] == {} and [loss["name"] for loss in record["losses"]] == ["redpo"]
    schedule = record["schedule"]
    assert (schedule["stages"], schedule["block_kinds"], schedule["pruner"]["blocks_per_stage"]) == (
        2,
        ["motion_module"],
        1,
    )
    assert (schedule["scorer"]["name"], schedule["curator"]["tau"]) == ("reward-drop", -1.0)
    assert record["training"]["trainable"] == "motion"

    run = tmp_path / "run"  # a run's stage-1 model, and its export
    stage_model = run / "stages" / "stage-001" / "model"
    stage_model.parent.mkdir(parents=True)
    (run / "resolved.json").write_text("{}")
    save_model(load_saved_model(folder / "pruned"), stage_model, record)
    exported = export_model(stage_model, "diffusers", tmp_path / "exported")
    assert exported["provenance"] == record
    assert json.loads((tmp_path / "exported" / "vipkit_export.json").read_text())["provenance"] == record

    # a second compression of that model, guided by two rewards with objective weights, hands the first record on
    second = (
        (recipes / "tiny_vip.toml")
        .read_text()
        .replace('name = "animatediff"\npreset = "tiny"', f'name = "animatediff"\nbase = "{stage_model}"')
        .replace(
            '[reward]\nname = "clip"\npreset = "tiny"\n',
            CLIP + CLIP2 + '[objective]\nweights = { "clip2.clip_score" = 1.0 }\n',
        )
    )
    (tmp_path / "second.toml").write_text(second)
    again = run_provenance(load_recipe(tmp_path / "second.toml"), Teacher(), trained=False)
    assert again["teacher_provenance"] == record and again["trained_scope"] == "motion"  # from the teacher
    assert guided_by(again) == "clip → clip + clip (clip2) · objective clip2.clip_score 1"

    matrix = (
        f'{TEACHER_ONLY}[[models]]\nlabel = "stage 1"\npath = "{stage_model}"\n'
        f'[[models]]\nlabel = "exported"\npath = "{tmp_path / "exported"}"\n' + CLIP
    )
    results, _ = bench_here(tmp_path, matrix, tmp_path / "out")
    teacher, stage, export = results["models"]
    assert (teacher["guided_by"], teacher["budget"], teacher["provenance"]) == ("teacher", "—", None)
    assert (stage["guided_by"], stage["budget"]) == ("clip", "stage 1 of 2 × block(blocks_per_stage=1)")
    assert (export["guided_by"], export["budget"]) == ("clip", "2 stages × block(blocks_per_stage=1)")
    assert stage["provenance"] == export["provenance"] == record
    assert (
        "| stage 1 | clip | stage 1 of 2 × block(blocks_per_stage=1) |" in (tmp_path / "out" / "bench.md").read_text()
    )
