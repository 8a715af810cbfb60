"""schedule.ranking = "once": stage 1 ranks the teacher, later stages walk on along that ranking, so that runs that
differ only in their distillation (or in how many stages they cut in) remove the same blocks."""

import json
from pathlib import Path

from conftest import MICRO_RECIPE

from vipkit.engine import compress
from vipkit.recipe import parse_recipe
from vipkit.rundir import RunDirectory

MICRO = Path(MICRO_RECIPE).read_text(encoding="utf-8")
ONCE = MICRO.replace('block_kinds = ["motion_module"]', 'block_kinds = ["motion_module"]\nranking = "once"', 1)
ONE_STAGE_OF_TWO_BLOCKS = MICRO.replace("stages = 2", "stages = 1", 1).replace(
    "blocks_per_stage = 1", "blocks_per_stage = 2", 1
)


def run(text: str, out: Path) -> tuple[RunDirectory, list[str]]:
    lines: list[str] = []
    compress(parse_recipe(text), text, out, log=lines.append)
    return RunDirectory(out), lines


def prune_record(run_dir: RunDirectory, stage: int) -> dict:
    return json.loads((run_dir.pairs_dir(stage) / "prune.json").read_text(encoding="utf-8"))


def test_ranking_once_walks_on_along_the_teachers_ranking_and_matches_a_one_shot_cut(tmp_path):
    assert "ranking" not in MICRO and parse_recipe(MICRO).schedule.ranking == "every_stage"
    once, lines = run(ONCE, tmp_path / "once")
    first, second = prune_record(once, 1), prune_record(once, 2)
    teacher_order = [item["block"] for item in sorted(first["importance"], key=lambda item: item["importance"])]
    assert first["removed_blocks"] == teacher_order[:1]
    # stage 2 ranked nothing: it holds stage 1's numbers for the blocks still there, and cuts the next one
    assert {item["block"]: item["importance"] for item in second["importance"]} == {
        item["block"]: item["importance"] for item in first["importance"] if item["block"] != teacher_order[0]
    }
    assert second["removed_blocks"] == teacher_order[1:2]
    assert sum("ranking" in line and "candidate blocks" in line for line in lines) == 1
    assert any("stage 2: walking on along stage 1's ranking" in line for line in lines)

    one_shot, _ = run(ONE_STAGE_OF_TWO_BLOCKS, tmp_path / "one-shot")
    assert prune_record(one_shot, 1)["importance"] == first["importance"]  # the same teacher, seed and probe
    assert prune_record(one_shot, 1)["removed_blocks"] == teacher_order[:2]
