"""vipkit sweep: Student's t and the intervals against values worked out by hand; sweep files with every problem at
once; plots that draw the statistics they are given; and a real sweep of the micro recipe through the CLI, killed in
its second run and resumed, whose means are those of its runs' results.json, with a failing variant marked while the
others complete (exit code 3), and a rerun that runs nothing again."""

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import MICRO_RECIPE, run_vipkit

from vipkit.sweep_plan import SweepError, resolve_sweep, sweep_from_options
from vipkit.sweep_plots import bars_figure, curve_figure
from vipkit.sweep_report import section_markdown
from vipkit.sweep_stats import describe, paired_difference, t_quantile, t_upper_tail, welch_difference
from vipkit.sweep_summary import summarize

T_975 = {1: 12.706204736174707, 2: 4.302652729749464, 3: 3.182446305284263, 4: 2.7764451051977987}
T_975 |= {10: 2.2281388519649385, 30: 2.0422724563012373}  # printed t tables (scipy.stats.t.ppf agrees)
HELDOUT = '["a yellow moon rising", "a purple kite drifting"]'
COMMON = [f"prompts.heldout={HELDOUT}", "schedule.stages=1", "train.epochs=1"]  # micro recipe, one short stage


# -- statistics ---------------------------------------------------------------------------------------------------
def test_t_quantile_matches_closed_forms_and_tables():
    for df, value in T_975.items():
        assert t_quantile(0.975, df) == pytest.approx(value, rel=1e-10)
        assert t_quantile(0.025, df) == pytest.approx(-value, rel=1e-10)
    for p in (0.55, 0.8, 0.95, 0.995, 0.9999):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)  # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
        alpha = 4 * p * (1 - p)  # 4 degrees of freedom have a closed form too
        assert t_quantile(p, 4) == pytest.approx(
            2 * math.sqrt(math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha) - 1), rel=1e-10
        )
    for t in (0.3, 1.0, 2.5, 9.0):  # 3 degrees of freedom: F(t) = 1/2 + (t/√3 / (1 + t²/3) + atan(t/√3)) / π
        u = t / math.sqrt(3)
        assert t_upper_tail(t, 3) == pytest.approx(0.5 - (u / (1 + u * u) + math.atan(u)) / math.pi, rel=1e-12)
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963984540054, abs=1e-6)  # the normal quantile
    assert t_quantile(0.5, 3) == 0.0
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_durations_round_to_the_second_before_the_minutes_split():
    from vipkit.sweep import _minutes

    assert [_minutes(s) for s in (41.6, 59.6, 179.6, 125)] == ["42 s", "1 min 00 s", "3 min 00 s", "2 min 05 s"]


def test_intervals_worked_out_by_hand():
    sample = describe([1.0, 2.0, 3.0, 4.0])  # mean 2.5, variance 5/3, 3 degrees of freedom
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert (sample.n, sample.mean) == (4, 2.5)
    assert sample.std == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert (sample.low, sample.high) == (pytest.approx(2.5 - half, rel=1e-10), pytest.approx(2.5 + half, rel=1e-10))
    assert sample.low == pytest.approx(0.44573974, abs=1e-8)
    assert describe([0.7]) == describe([0.7]) and describe([0.7]).std is None and describe([0.7]).holds(123.0)

    # seed by seed: seeds 0-2 on both sides (seed 5 has no partner): differences 0.02, 0.01, 0.05
    ours, baseline = {0: 0.52, 1: 0.56, 2: 0.65}, {0: 0.50, 1: 0.55, 2: 0.60, 5: 0.70}
    paired = paired_difference(ours, baseline)
    deviations = [0.02 - 0.08 / 3, 0.01 - 0.08 / 3, 0.05 - 0.08 / 3]
    std = math.sqrt(sum(d * d for d in deviations) / 2)
    assert paired.n == 3 and paired.mean == pytest.approx(0.08 / 3, rel=1e-12)
    assert paired.std == pytest.approx(std, rel=1e-10) == pytest.approx(0.020816660, rel=1e-7)
    assert paired.high - paired.mean == pytest.approx(4.302652729749464 * std / math.sqrt(3), rel=1e-10)
    assert paired.holds(0.0)  # [-0.0250, 0.0784]: three seeds cannot tell this from no difference
    assert paired_difference({1: 0.5}, {2: 0.5}) is None

    # unpaired (Welch): variances of the means 0.0044333 / 3 and 0.0072917 / 4, Welch–Satterthwaite df 4.953
    welch = welch_difference(list(ours.values()), list(baseline.values()))
    a, b = (1.0065 - 1.73**2 / 3) / 2 / 3, (1.4025 - 2.35**2 / 4) / 3 / 4  # sums of squares about the means
    df = (a + b) ** 2 / (a * a / 2 + b * b / 3)
    assert df == pytest.approx(4.953, abs=1e-3)
    assert welch.mean == pytest.approx(0.173 / 0.3 - 0.5875, rel=1e-9) and welch.std is None and welch.n == 7
    assert welch.high - welch.mean == pytest.approx(t_quantile(0.975, df) * math.sqrt(a + b), rel=1e-6)
    assert welch.high - welch.low > paired.high - paired.low  # pairing removes the spread between seeds
    assert welch_difference([0.5], [0.4, 0.6]).low is None


# -- sweep files ----------------------------------------------------------------------------------------------------
def problems(data: dict, base_dir: Path = Path(MICRO_RECIPE).parent) -> list[str]:
    with pytest.raises(SweepError) as caught:
        resolve_sweep({"recipe": Path(MICRO_RECIPE).name, **data}, "sweep.toml", base_dir)
    return caught.value.errors


def test_sweep_file_problems_come_all_at_once_with_their_keys():
    assert problems(
        {"seeds": 0, "extra": 1, "variants": {"a": ["train.learning_rat=1e-3"], "b/c": []}, "baseline": "z"}
    ) == [
        "extra: unknown key (known: baseline, curve, description, recipe, seeds, set, variants)",
        "seeds: how many seeds to run, from 1 to 10000 (3 or more for an interval), got 0",
        "variants.b/c: a variant's name is its folder: letters, digits, '_', '.', '-' (up to 64, not starting with "
        "'.', '_' or '-')",
        "variants.a: train.learning_rat: unknown option; did you mean 'learning_rate'? (known: batch_size, "
        "checkpoint_every, compile, epochs, fsdp, gradient_accumulation_steps, gradient_checkpointing, "
        "keep_checkpoints, learning_rate, log_with, lora, lr_schedule, max_grad_norm, mixed_precision, optimizer, "
        "trainable, trainable_dtype, warmup_steps, weight_decay)",
        "baseline: 'z' is none of the variants (a, b/c)",
    ]
    assert problems({"seeds": [1, 1, -2], "set": ["seed=3"], "variants": {"b": ["train.epochs"]}}) == [
        "seeds[2]: must be from 0 to 4294967295, got -2",
        "seeds: [1, 1, -2] repeats a seed; each run of a variant needs its own",
        "set[0]: 'seed=3' sets the seed, which the sweep sets for each run from `seeds`",
        "variants.b: --set 'train.epochs': write KEY=VALUE, e.g. train.learning_rate=1e-5 or model.preset=random",
    ]
    assert problems({"seeds": "3"}) == [
        "seeds: a number of seeds (seeds = 3) or a non-empty list of them (seeds = [0, 7, 9]), got '3'"
    ]
    curve = {"key": "losses[0].beta", "values": [1, -1]}
    assert problems({"seeds": 2, "variants": {"a": [], "b": ["train.epochs=-1"]}, "curve": curve}) == [
        "variants.b: train.epochs: Input should be greater than or equal to 0, got -1",
        "curve.values[1] (losses[0].beta = -1): losses[0].beta: Input should be greater than 0, got -1",
    ]
    curve = {"key": "losses.0.sft_weight", "values": [1, 1.0]}
    assert problems({"seeds": 2, "variants": {"a": ["losses[0].sft_weight=2"]}, "curve": curve}) == [
        "variants.a[0]: 'losses[0].sft_weight=2' sets the key [curve] sweeps (losses.0.sft_weight)",
        "curve.values: [1, 1.0] repeats a value",
    ]
    assert problems({"seeds": 2}, Path("/nonexistent")) == [
        "recipe: cannot read recipe /nonexistent/micro_vip.toml: No such file or directory"
    ]


def test_the_command_line_form_is_the_same_sweep_as_the_file():
    file = resolve_sweep(
        {
            "recipe": MICRO_RECIPE,
            "seeds": 2,
            "set": COMMON,
            "variants": {"redpo": [], "sft": ["losses[0].dpo_weight=0"]},
        },
        "sweep.toml",
        Path("/"),
    )
    flags = sweep_from_options(
        Path(MICRO_RECIPE),
        2,
        [*(f"redpo:{s}" for s in COMMON), *(f"sft:{s}" for s in COMMON), "sft:losses.0.dpo_weight=0"],
    )
    assert flags.baseline == file.baseline == "redpo"
    assert [(run.label, run.recipe.fingerprint()) for run in flags.runs] == [
        (run.label, run.recipe.fingerprint()) for run in file.runs
    ]
    assert [run.label for run in file.runs] == ["redpo seed 0", "sft seed 0", "redpo seed 1", "sft seed 1"]
    assert file.runs[1].recipe.losses[0].config.dpo_weight == 0 and file.runs[1].recipe.seed == 0
    assert file.runs[1].recipe_text.startswith(
        "# applied by vipkit sweep (sweep.toml, sft): --set prompts.heldout=["
    ) and "--set losses[0].dpo_weight=0\n# applied by vipkit sweep (sweep.toml, sft): --set seed=0\n" in (
        file.runs[1].recipe_text
    )


def test_a_curve_runs_every_value_under_every_variant_and_the_plots_draw_the_intervals():
    plan_data = {
        "recipe": MICRO_RECIPE,
        "seeds": [4, 9, 2],
        "variants": {"a": [], "b": ["train.epochs=1"]},
        "curve": {"key": "losses[0].sft_weight", "values": [0.1, 10]},
    }
    plan = resolve_sweep(plan_data, "sweep.toml", Path("/"))
    assert [v.name for v in plan.variants] == ["a@0.1", "a@10", "b@0.1", "b@10"] and plan.baseline == "a"
    # each point is compared with the baseline's point at the same value of the swept key
    assert [plan.baseline_of(v.name) for v in plan.variants] == [None, None, "a@0.1", "a@10"]
    assert [(r.variant.name, r.seed) for r in plan.runs[:4]] == [("a@0.1", 4), ("a@10", 4), ("b@0.1", 4), ("b@10", 4)]
    assert {(r.recipe.losses[0].config.sft_weight, r.recipe.train.epochs, r.recipe.seed) for r in plan.runs} == {
        (w, e, s) for w in (0.1, 10) for e in (1, 2) for s in (4, 9, 2)
    }
    # statistics of given per-run numbers (what run_measures reads from each results.json), then drawn
    records = []
    for i, run in enumerate(plan.runs):
        value = 0.5 + 0.01 * i + (0.1 if run.variant.group == "b" else 0.0)
        measures = {"heldout:objective": value, "heldout:motion": value / 2, "eval:objective": value + 0.01}
        records.append({"variant": run.variant.name, "seed": run.seed, "measures": measures, "teacher": measures})
    sweep = {**plan.describe(), **summarize(plan, records)}
    b10 = sweep["statistics"]["b@10"]["heldout:objective"]
    expected = describe([r["measures"]["heldout:objective"] for r in records if r["variant"] == "b@10"])
    assert b10 == expected.as_dict() and b10["n"] == 3
    assert sweep["differences"].keys() == {"b@0.1", "b@10"}
    assert sweep["differences"]["b@10"]["heldout:objective"]["paired"] is True
    assert sweep["differences"]["b@10"]["heldout:objective"]["mean"] == pytest.approx(0.12)  # 0.1 + 2 runs later
    markdown = section_markdown(sweep, "heldout")
    assert "### Difference from a at the same losses[0].sft_weight" in markdown and "b@10 − a@10" in markdown
    fixed = resolve_sweep({**plan_data, "baseline": "a@0.1"}, "sweep.toml", Path("/"))  # one point for all
    assert [fixed.baseline_of(v.name) for v in fixed.variants] == [None, "a@0.1", "a@0.1", "a@0.1"]
    assert summarize(fixed, records)["differences"].keys() == {"a@10", "b@0.1", "b@10"}

    lines = curve_figure(sweep).axes[0].containers
    assert len(lines) == 2  # one line per named variant
    for container, group in zip(lines, ("a", "b"), strict=True):
        data, _, (bars,) = container.lines
        intervals = [sweep["statistics"][f"{group}@{value}"]["heldout:objective"] for value in ("0.1", "10")]
        assert list(data.get_xdata()) == [0.1, 10] and list(data.get_ydata()) == [i["mean"] for i in intervals]
        assert [tuple(segment[:, 1]) for segment in bars.get_segments()] == [(i["low"], i["high"]) for i in intervals]
    assert curve_figure(sweep).axes[0].get_xscale() == "log"  # 0.1 to 10: two orders of magnitude

    heldout, evaluation, difference = (bar_groups(axis) for axis in bars_figure(sweep).axes)
    teacher, *variants = heldout
    assert [bar.get_height() for bar in teacher] == [
        sweep["teacher"][k]["mean"] for k in ("heldout:objective", "heldout:motion")
    ]
    for container, variant in zip(variants, plan.variants, strict=True):
        intervals = [sweep["statistics"][variant.name][k] for k in ("heldout:objective", "heldout:motion")]
        assert [bar.get_height() for bar in container] == [i["mean"] for i in intervals]
        (bars,) = container.errorbar.lines[2]
        ends = [end for segment in bars.get_segments() for end in segment[:, 1]]  # mean − below, mean + above
        assert ends == pytest.approx([end for i in intervals for end in (i["low"], i["high"])], abs=1e-12)
    assert len(evaluation) == 5 and len(difference) == 2  # the teacher and 4 variants; b's 2 differences from a


def bar_groups(axis) -> list:
    """An axis's bar groups, one per series (each with its error bars in ``.errorbar``)."""
    from matplotlib.container import BarContainer

    return [container for container in axis.containers if isinstance(container, BarContainer)]


# -- a real sweep -----------------------------------------------------------------------------------------------------
def sweep_file(folder: Path) -> Path:
    path = folder / "micro_sweep.toml"
    path.write_text(
        f"recipe = {json.dumps(MICRO_RECIPE)}\nseeds = 2\nset = {json.dumps(COMMON)}\n\n[variants]\n"
        'redpo = []\nsft = ["losses[0].dpo_weight=0"]\n'
        "broken = ['schedule.block_kinds=[\"no_such_kind\"]']  # validates; fails when the model is built\n",
        encoding="utf-8",
    )
    return path


def test_sweep_through_the_cli_killed_resumed_failing_run_marked_and_rerun_reused(tmp_path):
    file, out = sweep_file(tmp_path), tmp_path / "sweep"
    killed = run_vipkit("sweep", str(file), "--out", str(out), env={"VIPKIT_TEST_KILL_AT": "curate:2"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL inside run 2 (sft seed 0), after run 1
    partial = json.loads((out / "sweep.json").read_text())
    assert [run["status"] for run in partial["runs"]] == ["finished", *["pending"] * 5]
    assert (out / "runs/sft/seed-0/resolved.json").exists() and not (out / "runs/sft/seed-0/results.json").exists()

    resumed = run_vipkit("sweep", str(file), "--out", str(out))
    assert resumed.returncode == 3, resumed.stderr[-3000:]
    assert "1 finished earlier (reused), 5 to run or resume" in resumed.stderr
    assert "run 2/6: sft seed 0: resuming in" in resumed.stderr and "Traceback" not in resumed.stderr
    assert "2 of 6 runs failed (broken seed 0, broken seed 1;" in resumed.stderr
    assert "## Final model on the held-out prompts (2 prompts, one video each per seed)" in resumed.stdout
    sweep = json.loads((out / "sweep.json").read_text())
    broken = [run for run in sweep["runs"] if run["variant"] == "broken"]
    assert [run["status"] for run in broken] == ["failed", "failed"] and sweep["failed"] == [
        "broken seed 0",
        "broken seed 1",
    ]
    assert all(
        "schedule.block_kinds: model 'animatediff' has no block of kind 'no_such_kind'" in r["error"] for r in broken
    )

    # every statistic is that of the runs' own results.json
    results = {
        (variant, seed): json.loads((out / f"runs/{variant}/seed-{seed}/results.json").read_text())
        for variant in ("redpo", "sft")
        for seed in (0, 1)
    }

    def final(variant: str, seed: int) -> dict:
        return results[(variant, seed)]["stages"][-1]["distilled"]

    def teacher(variant: str, seed: int) -> dict:
        return results[(variant, seed)]["teacher"]

    numbers = {
        "heldout:objective": lambda entry: entry["heldout"]["objective"],
        "heldout:frame_consistency": lambda entry: entry["heldout"]["scores"]["frame_consistency"],
        "eval:objective": lambda entry: entry["objective"],
    }
    for key, number in numbers.items():
        for variant in ("redpo", "sft"):
            values = [number(final(variant, seed)) for seed in (0, 1)]
            stats = sweep["statistics"][variant][key]
            half = T_975[1] * statistics.stdev(values) / math.sqrt(2)
            assert stats["mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            assert stats["std"] == pytest.approx(statistics.stdev(values), abs=1e-12)
            assert (stats["low"], stats["high"]) == pytest.approx(
                (stats["mean"] - half, stats["mean"] + half), abs=1e-9
            )
            shares = [number(final(variant, s)) / number(teacher(variant, s)) for s in (0, 1)]
            assert sweep["statistics"][variant][key + "/teacher"]["mean"] == pytest.approx(statistics.fmean(shares))
            cell = f"{stats['mean']:.4f} ± {stats['std']:.4f} [{stats['low']:.4f}, {stats['high']:.4f}] (2)"
            assert cell in (out / "sweep.md").read_text()
        teachers = [number(teacher("redpo", seed)) for seed in (0, 1)]
        assert teachers == [number(teacher("sft", seed)) for seed in (0, 1)]  # same seed: same teacher videos
        assert sweep["teacher"][key]["mean"] == pytest.approx(statistics.fmean(teachers), abs=1e-12)
        differences = [number(final("sft", s)) - number(final("redpo", s)) for s in (0, 1)]
        difference = sweep["differences"]["sft"][key]
        assert difference["paired"] is True and difference["n"] == 2
        assert difference["mean"] == pytest.approx(statistics.fmean(differences), abs=1e-12)
        half = T_975[1] * statistics.stdev(differences) / math.sqrt(2)
        assert difference["high"] == pytest.approx(difference["mean"] + half, abs=1e-9)
    for variant, seed in results:
        assert final(variant, seed)["heldout"] == results[(variant, seed)]["final"]["heldout"]

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [(row["variant"], row["seed"], row["status"]) for row in rows] == [
        (v, str(s), "failed" if v == "broken" else "finished") for s in (0, 1) for v in ("redpo", "sft", "broken")
    ]
    for row in rows[:2]:
        assert float(row["heldout:objective"]) == final(row["variant"], int(row["seed"]))["heldout"]["objective"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun runs nothing that finished again, here in the command-line form without the failing variant: the same
    # recipes, so the same run folders (no model is even built: the command imports no torch)
    finished = {key: (out / f"runs/{key[0]}/seed-{key[1]}/results.json").stat().st_mtime_ns for key in results}
    variants = [f"--variant=redpo:{item}" for item in COMMON] + [f"--variant=sft:{item}" for item in COMMON]
    rerun = run_vipkit(
        "sweep",
        "--recipe",
        MICRO_RECIPE,
        "--seeds",
        "2",
        *variants,
        "--variant=sft:losses.0.dpo_weight=0",
        "-o",
        str(out),
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "4 finished earlier (reused), 0 to run or resume" in rerun.stderr
    assert finished == {key: (out / f"runs/{key[0]}/seed-{key[1]}/results.json").stat().st_mtime_ns for key in results}
    again = json.loads((out / "sweep.json").read_text())
    assert [run["reused"] for run in again["runs"]] == [True] * 4 and again["failed"] == []
    assert again["statistics"] == {name: sweep["statistics"][name] for name in ("redpo", "sft")}
    assert again["differences"] == {"sft": sweep["differences"]["sft"]} and again["teacher"] == sweep["teacher"]


def test_a_bad_sweep_file_exits_2_with_one_paragraph_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'recipe = {json.dumps(MICRO_RECIPE)}\nseeds = 0\n[variants]\nsft = ["losses[0].dpo_wieght=0"]\n')
    result = run_vipkit("sweep", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: sweep {bad} has 2 problems:\n  - seeds: how many seeds to run, from 1")
    assert "  - variants.sft: losses[0].dpo_wieght: unknown option; did you mean 'dpo_weight'?" in result.stderr
    assert not (tmp_path / "out").exists()
    good = sweep_file(tmp_path)
    planned = run_vipkit("sweep", str(good), "--out", str(tmp_path / "out"), "--dry-run", "--seeds", "3")
    assert planned.returncode == 0, planned.stderr
    assert planned.stderr.count(": to run (") == 9 and "dry run: 9 runs check out, nothing was run" in planned.stderr
    assert not (tmp_path / "out").exists()
    neither = run_vipkit("sweep", "--seeds", "3")
    assert neither.returncode == 2 and "give a sweep file (`vipkit sweep FILE`), or a recipe" in neither.stderr
