"""The cross-reward grid: a matrix's [[recipes]] compressed once each (by recipe fingerprint, resumable), their models
and teacher judged by every reward, each cell the change against the teacher; a failed compression marks its cells."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import tomllib
from pathlib import Path

import pytest
from conftest import run_vipkit
from PIL import Image

from vipkit.bench_matrix import load_matrix
from vipkit.bench_recipes import recipe_toml
from vipkit.errors import VipkitError
from vipkit.recipe import load_recipe

ROOT = Path(__file__).parents[1]
PROMPTS = [
    "a small red circle moving left slowly on a white background",
    "a large blue square moving up quickly on a black background",
]
RECIPE = f"""
seed = 0
[model]
name = "animatediff"
preset = "tiny"
height = 16
width = 16
num_frames = 4
num_inference_steps = 2
[reward]
name = "shapes"
[prompts]
train = {json.dumps(PROMPTS)}
eval = {json.dumps(PROMPTS)}
videos_per_prompt = 1
[schedule]
stages = 1
block_kinds = ["motion_module"]
[scorer]
name = "param-count"
[pruner]
name = "block"
blocks_per_stage = 1
[curator]
name = "degraded-dimensions"
margin = -1.0
tau = -1.0
[[losses]]
name = "redpo"
sft_weight = 1.0
[train]
epochs = 1
batch_size = 2
learning_rate = 1e-3
"""
GUIDES = (
    '[[recipes]]\nlabel = "shapes"\nrecipe = "recipe.toml"\nseeds = [0, 1]\n'
    '[[recipes]]\nlabel = "smoothness"\nrecipe = "recipe.toml"\nseeds = [0]\n'
    '[recipes.reward]\nname = "shapes-smoothness"\n'
)
JUDGES = '[[rewards]]\nname = "shapes"\n[[rewards]]\nname = "shapes-smoothness"\nas = "smoothness"\n'
DIVERGING = (
    '[[recipes]]\nlabel = "diverging"\nrecipe = "recipe.toml"\nseeds = [0]\n'
    'set = ["train.learning_rate=1e30", "train.epochs=2"]\n'  # the second step's loss is nan
)
COLUMNS = [
    "shapes.text_alignment",
    "shapes.temporal_consistency",
    "shapes.dynamic_degree",
    "shapes.visual_quality",
    "smoothness.motion_smoothness",
    "shapes mean",
    "objective",
]


def matrix_text(guides: str = GUIDES) -> str:
    return f"seed = 5\n[prompts]\neval = {json.dumps(PROMPTS)}\n" + guides + JUDGES


def bench_here(folder: Path, text: str, out: Path) -> tuple[dict, str]:
    """``run_bench`` in this process: the results and the log."""
    from vipkit.bench import run_bench

    (folder / "matrix.toml").write_text(text)
    lines: list[str] = []
    results = run_bench(load_matrix(folder / "matrix.toml"), out, lines.append)
    return results, "\n".join(lines)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> tuple[Path, dict, str]:
    """Two guides (the recipe's own reward on seeds 0 and 1, shapes-smoothness on seed 0), judged by both rewards."""
    folder = tmp_path_factory.mktemp("grid")
    (folder / "recipe.toml").write_text(RECIPE)
    results, log = bench_here(folder, matrix_text(), folder / "out")
    return folder, results, log


def test_each_compression_runs_once_as_a_run_folder_named_by_its_fingerprint(grid_run):
    folder, results, log = grid_run
    assert log.count("its compression in") == 3 and results["failed"] == []
    labels = [row["label"] for row in results["models"]]
    assert labels == ["teacher", "shapes · seed 0", "shapes · seed 1", "smoothness · seed 0"]
    for label, run in results["compressions"].items():
        run = Path(run)
        stored = load_recipe(run / "recipe.toml")  # the recipe as validated, kept in its run folder
        assert run.parent == folder / "out" / "runs" and run.name == stored.fingerprint()
        assert json.loads((run / "results.json").read_text())["fingerprint"] == run.name
        row = results["models"][labels.index(label)]
        assert row["provenance"]["recipe"]["fingerprint"] == run.name and row["provenance"]["recipe"]["seed"] == int(
            label[-1]
        )
    smoothness = results["models"][3]
    assert smoothness["guided_by"] == "shapes-smoothness" and results["models"][1]["guided_by"] == "shapes"
    assert load_recipe(Path(results["compressions"]["shapes · seed 0"]) / "recipe.toml").fingerprint() == (
        load_recipe(folder / "recipe.toml").fingerprint()  # no override: the recipe itself
    )


def test_each_cell_is_the_change_of_the_stored_scores_against_the_teacher(grid_run):
    folder, results, _ = grid_run
    rows = {row["label"]: row for row in results["models"]}

    def values(label: str) -> dict[str, float]:
        scores = dict(rows[label]["scores"])
        shapes = [scores[c] for c in COLUMNS[:4]]
        return {**scores, "shapes mean": sum(shapes) / 4, "objective": rows[label]["objective"]}

    teacher = values("teacher")
    grid = results["grid"]
    assert grid["columns"] == COLUMNS and grid["teachers"]["teacher"] == pytest.approx(teacher, abs=1e-12)
    shapes, smoothness = grid["guides"]
    assert (shapes["guided_by"], shapes["seeds"], smoothness["seeds"]) == ("shapes", [0, 1], [0])
    for column in COLUMNS:
        changes = [values(f"shapes · seed {s}")[column] - teacher[column] for s in (0, 1)]
        cell = shapes["cells"][column]
        assert cell["change_per_seed"] == pytest.approx({"0": changes[0], "1": changes[1]}, abs=1e-12)
        assert (cell["mean"], cell["sd"], cell["n"], cell["error"]) == (
            pytest.approx(statistics.fmean(changes), abs=1e-12),
            pytest.approx(statistics.stdev(changes), abs=1e-12),
            2,
            None,
        )
        alone = smoothness["cells"][column]
        assert alone["mean"] == pytest.approx(values("smoothness · seed 0")[column] - teacher[column], abs=1e-12)
        assert alone["sd"] is None and alone["n"] == 1
    assert any(abs(shapes["cells"][c]["mean"]) > 1e-4 for c in COLUMNS)  # the models differ from the teacher

    stored = [json.loads(p.read_text()) for p in (folder / "out" / "models").glob("*.json")]
    assert len(stored) == 4  # the teacher and 3 compressed models, each scored by both reward parts
    assert all(len(row["parts"]) == 2 for row in stored)
    cell = shapes["cells"]["smoothness.motion_smoothness"]
    table = (folder / "out" / "bench.md").read_text()
    cells = [shapes["cells"][column] for column in COLUMNS]
    assert "| shapes | " + " | ".join(f"{c['mean']:+.3f} ± {c['sd']:.3f}" for c in cells) + " |\n" in table
    assert "![guided by × judged by](grid.png)" in table
    lines = list(csv.DictReader((folder / "out" / "grid.csv").open()))
    assert len(lines) == 2 * len(COLUMNS)
    line = next(x for x in lines if (x["guided_by"], x["judged_by"]) == ("shapes", "smoothness.motion_smoothness"))
    assert (float(line["change_mean"]), float(line["change_sd"]), line["n"]) == (cell["mean"], cell["sd"], "2")
    assert float(line["teacher_score"]) == teacher["smoothness.motion_smoothness"]
    with Image.open(folder / "out" / "grid.png") as image:
        assert image.format == "PNG" and image.size == (
            round(100 * (2.0 + 1.15 * len(COLUMNS))),
            round(100 * (1.6 + 0.62 * 2)),
        )


def test_a_second_call_runs_no_compression_and_renders_nothing(grid_run, tmp_path):
    folder, first, _ = grid_run
    shutil.copytree(folder / "out", tmp_path / "out")
    again, log = bench_here(folder, matrix_text(), tmp_path / "out")
    assert log.count("reusing its finished compression") == 3 and "its compression in" not in log
    assert "building" not in log and log.count("reusing its stored videos' scores") == 4
    assert again["grid"] == first["grid"]


def test_a_killed_compression_resumes_a_failing_one_marks_its_cells_and_the_cli_exits_3(grid_run, tmp_path):
    folder, first, _ = grid_run
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    shutil.copy(folder / "recipe.toml", tmp_path / "recipe.toml")
    killed = out / "runs" / Path(first["compressions"]["shapes · seed 1"]).name
    (killed / "results.json").unlink()  # killed after its stage finished, before the final model was saved
    shutil.rmtree(killed / "model")
    (tmp_path / "matrix.toml").write_text(matrix_text(GUIDES + DIVERGING))
    result = run_vipkit("bench", "--matrix", str(tmp_path / "matrix.toml"), "--out", str(out))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "1 of 5 rows failed" in result.stderr
    assert result.stderr.count("reusing its finished compression") == 2
    assert f"shapes · seed 1: resuming its compression in {killed}" in result.stderr
    assert "shapes · seed 1: resuming after stage 1" in result.stderr
    assert "shapes · seed 1: building\n" not in result.stderr  # the resumed run saved the same model: its row is reused

    bench = json.loads((out / "bench.json").read_text())
    assert bench["failed"] == ["diverging · seed 0"]
    error = bench["models"][-1]["error"]
    assert error.startswith(
        "recipes[2] seed 0 ('diverging · seed 0'): compressing: stage 1: training diverged: the training loss became nan"
    )
    assert bench["models"][-1]["guided_by"] == "shapes" and bench["models"][-1]["parameters"] is None
    shapes, smoothness, diverging = bench["grid"]["guides"]
    assert [shapes, smoothness] == first["grid"]["guides"]  # the rest completes, unchanged
    assert all(
        cell["mean"] is None and cell["n"] == 0 and cell["error"] == error for cell in diverging["cells"].values()
    )
    assert "| diverging | " + " | ".join(["failed"] * len(COLUMNS)) + " |" in result.stdout
    assert f"- {error}\n" in (out / "bench.md").read_text()
    lines = [x for x in csv.DictReader((out / "grid.csv").open()) if x["guided_by"] == "diverging"]
    assert len(lines) == len(COLUMNS) and all(x["change_mean"] == "" and x["error"] == error for x in lines)


BAD = [
    ('[[recipes]]\nrecipe = "recipe.toml"\n', ["recipes[0].label: required"]),
    ('[[recipes]]\nlabel = "a"\n', ["recipes[0].recipe: required"]),
    ('[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\nseeds = [1, 1]\n', ["recipes[0].seeds: must be a list of"]),
    ('[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\nseed = 1\n', ["recipes[0].seed: unknown key"]),
    ('[[recipes]]\nlabel = "a"\nrecipe = "nowhere.toml"\n', ["recipes[0].recipe: cannot read recipe", "nowhere.toml"]),
    (
        '[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\n[recipes.reward]\nname = "shapez"\n',
        ["recipes[0] ('a', recipe recipe.toml): reward.name: unknown RewardModel 'shapez'. Did you mean 'shapes'?"],
    ),
    (
        '[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\n[recipes.objective]\nweights = { nope = 1.0 }\n',
        ["recipes[0] ('a', recipe recipe.toml): objective.weights.nope: reward 'shapes' has no such dimension"],
    ),
    (
        '[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\nset = ["losses[3].beta=1"]\n',
        ["recipes[0].set: --set 'losses[3].beta=1': losses.3: the recipe has 1 such tables"],
    ),
    (
        '[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\n[[recipes]]\nlabel = "b"\nrecipe = "recipe.toml"\n',
        ["recipes[1]: seed 0 is the same compression as recipes[0] ('a · seed 0', recipe fingerprint"],
    ),
    (
        '[[models]]\nlabel = "teacher"\nname = "animatediff"\npreset = "tiny"\n'
        '[[recipes]]\nlabel = "a"\nrecipe = "recipe.toml"\n',
        ["models: 'teacher' names a row of its own, and is the label of recipes[0]'s teacher"],
    ),
]


@pytest.mark.parametrize(("guides", "expected"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_bad_recipes_table_is_named_by_its_key(tmp_path, guides, expected):
    (tmp_path / "recipe.toml").write_text(RECIPE)
    (tmp_path / "matrix.toml").write_text(matrix_text(guides))
    with pytest.raises(VipkitError) as info:
        load_matrix(tmp_path / "matrix.toml")
    assert all(part in str(info.value) for part in expected), str(info.value)


def test_a_models_row_with_the_recipes_model_is_the_teacher(tmp_path):
    (tmp_path / "recipe.toml").write_text(RECIPE)
    model = tomllib.loads(RECIPE)["model"]
    listed = '[[models]]\nlabel = "the teacher"\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in model.items())
    (tmp_path / "matrix.toml").write_text(matrix_text(listed + GUIDES))
    matrix = load_matrix(tmp_path / "matrix.toml")
    assert [m.label for m in matrix.models] == ["the teacher"]
    assert matrix.teachers == {"shapes": "the teacher", "smoothness": "the teacher"}


def test_the_shipped_grids_plan_their_compressions_without_a_model():
    shapes = load_matrix(ROOT / "benchmarks" / "shapes_grid.toml")
    fast = load_recipe(ROOT / "recipes" / "shapes_vip_fast.toml")
    compressions = [c for recipe in shapes.recipes for c in recipe.compressions]
    assert [c.label for c in compressions[::3]] == [
        "shapes · seed 0",
        "dynamic_degree alone · seed 0",
        "shapes-smoothness · seed 0",
    ]
    assert len({c.fingerprint for c in compressions}) == 9 and compressions[0].fingerprint == fast.fingerprint()
    alone, smooth = compressions[3].recipe, compressions[6].recipe
    assert alone.objective.weights == {"dynamic_degree": 1.0} and alone.curator.dump()["dimensions"] == [
        "dynamic_degree"
    ]
    assert (smooth.reward.name, smooth.objective.weights) == ("shapes-smoothness", {})
    assert [m.label for m in shapes.models] == ["teacher"] and shapes.models[0].spec.dump() == fast.model.dump()
    assert len(shapes.prompts) == 32

    real = load_matrix(ROOT / "benchmarks" / "animatediff_grid.toml")
    videoscore, clip = (recipe.compressions[0] for recipe in real.recipes)
    assert videoscore.fingerprint == load_recipe(ROOT / "recipes" / "animatediff_vip.toml").fingerprint()
    # the paper recipe with its reward replaced is exactly the shipped CLIP variant
    assert clip.fingerprint == load_recipe(ROOT / "recipes" / "animatediff_vip_clip.toml").fingerprint()
    assert [part.name for part in real.reward.parts.values()] == ["videoscore", "clip", "vbench"]
    assert real.teachers == {"videoscore": "teacher", "clip": "teacher"}


def test_recipe_toml_reads_back_to_the_same_data():
    data = {
        "seed": 3,
        "description": 'quotes " and \\ and ünïcode and \x7f and a tab\t',
        "model": {"name": "animatediff", "lora": {"rank": 4, "alpha": 1e-05}, "flag": True},
        "objective": {"weights": {"shapes.text_alignment": 2.0, "b": 0.5}},
        "losses": [{"name": "redpo", "beta": 5000}, {"name": "sft", "weight": 1e4}],
        "prompts": {"train": ["a", "b"], "empty": []},
    }
    assert tomllib.loads(recipe_toml(data)) == data
