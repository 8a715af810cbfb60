"""Cost and rank agreement of the cheap importance scorers with reward-drop on the shapes teacher (CPU).

    python benchmarks/scorer_agreement.py [--seeds 10 11 12 13 14 15] [--teacher models/shapes-teacher]

Per seed: 8 probe prompts of the shapes grammar (``sample_scenes(8, seed)``, video seeds ``1000·seed + i``), rendered
and scored as the engine's ``evaluate`` does (the teacher's generation settings, the ``shapes`` reward, equal
objective weights as in recipes/shapes_vip.toml). Candidates: every prunable block of the teacher (7 motion modules,
the transformer block inside each, 7 spatial transformer blocks: 21), and the 7 motion modules alone (the recipe's).
Scorers: ``reward-drop`` (the reference), ``prediction-drop`` (default options) and ``two-pass`` (motion modules,
``--finalists``). Agreement is Spearman's ρ with reward-drop on the same probe videos, and with reward-drop on the
other seeds' videos pooled (5 × 8 = 40 videos with 6 seeds): reward-drop on 8 videos is itself noisy, and the second
reference shows how close each scorer, reward-drop included, comes to a better estimate of it. Cost: seconds of each
``rank`` call and denoiser evaluations (videos through the UNet; classifier-free guidance counts two).

Prints one JSON line per seed (importances and costs; ``--reuse`` reads them back after an interruption), one line
of agreement per seed, and a summary line (mean ρ with a 95 % t-interval over the seeds, median cost ratios).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import vipkit
from vipkit.plugins import load_plugins
from vipkit_shapes import ShapesReward
from vipkit_shapes.world import describe, sample_scenes
from vipkit_strategies import PredictionDrop, RewardDrop, TwoPass

PRUNED = 2  # motion modules removed per stage by recipes/shapes_vip.toml
REFERENCE_COST = {  # a scorer's run -> reward-drop's run on the same candidates
    "prediction-drop": "reward-drop",
    "prediction-drop motion": "reward-drop motion",
    "two-pass motion": "reward-drop motion",
}
T_975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the ranks (ties get their mean rank)."""

    def ranks(values: Sequence[float]) -> torch.Tensor:
        x = torch.tensor(values, dtype=torch.float64)
        order = x.argsort()
        rank = torch.empty_like(x)
        rank[order] = torch.arange(len(x), dtype=torch.float64)
        for value in x.unique():
            rank[x == value] = rank[x == value].mean()
        return rank - rank.mean()

    ra, rb = ranks(a), ranks(b)
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def interval(values: Sequence[float]) -> dict[str, float]:
    """Mean and the 95 % t-interval over seeds."""
    mean = statistics.fmean(values)
    half = T_975[len(values)] * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": round(mean, 3), "low": round(mean - half, 3), "high": round(mean + half, 3)}


class Meter:
    """Denoiser evaluations (videos through the UNet) and seconds of whatever runs inside ``measure``."""

    def __init__(self, model: vipkit.VideoModel) -> None:
        self.evaluations = 0
        model.denoiser().register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.evaluations += sample.shape[0]

    def measure(self, call: Callable[[], object]) -> tuple[object, dict[str, float]]:
        before, started = self.evaluations, time.perf_counter()
        result = call()
        return result, {"seconds": round(time.perf_counter() - started, 2), "evaluations": self.evaluations - before}


class Probe:
    """One seed's probe prompts and seeds, and the engine's ``evaluate`` on them (render, score), each call's cost kept."""

    def __init__(self, seed: int, videos: int, reward: ShapesReward, meter: Meter) -> None:
        self.prompts = [describe(scene) for scene in sample_scenes(videos, seed=seed, two_object_fraction=0.25)]
        self.seeds = [1000 * seed + i for i in range(videos)]
        self.reward, self.meter = reward, meter
        self.calls: list[dict[str, float]] = []

    def evaluate(self, model: vipkit.VideoModel) -> vipkit.Scores:
        scores, cost = self.meter.measure(
            lambda: self.reward.score(model.generate(self.prompts, self.seeds).videos, self.prompts)
        )
        self.calls.append(cost)
        return scores


def rank(
    scorer: vipkit.ImportanceScorer,
    teacher: vipkit.VideoModel,
    candidates: list[vipkit.Block],
    probe: Probe,
    meter: Meter,
) -> tuple[list[vipkit.BlockImportance], dict[str, float]]:
    ranking, cost = meter.measure(lambda: scorer.rank(teacher, candidates, probe.evaluate, vipkit.Objective({})))
    assert teacher.removed_blocks == []
    return ranking, cost


def importances(ranking: list[vipkit.BlockImportance]) -> dict[str, float]:
    return {item.block.name: item.importance for item in ranking}


def measure_seed(seed: int, teacher: vipkit.VideoModel, args: argparse.Namespace, meter: Meter) -> dict:
    """Every scorer on one seed's probe videos: importances and costs."""
    probe = Probe(seed, args.videos, ShapesReward(), meter)
    blocks = teacher.blocks()
    motion = [block for block in blocks if block.kind == "motion_module"]
    reward_drop, rd_cost = rank(RewardDrop(), teacher, blocks, probe, meter)
    # reward-drop of the motion modules alone makes the same evaluations: the baseline, then each module's own
    position = {block.name: 1 + index for index, block in enumerate(blocks)}
    calls = [probe.calls[0]] + [probe.calls[position[block.name]] for block in motion]
    rd_motion_cost = {key: round(sum(call[key] for call in calls), 2) for key in ("seconds", "evaluations")}
    prediction_drop, pd_cost = rank(PredictionDrop(), teacher, blocks, probe, meter)
    pd_motion, pd_motion_cost = rank(PredictionDrop(), teacher, motion, probe, meter)
    two_pass, tp_cost = rank(TwoPass.from_options({"finalists": args.finalists}), teacher, motion, probe, meter)
    return {
        "prompts": probe.prompts,
        "reward-drop": importances(reward_drop),
        "prediction-drop": importances(prediction_drop),
        "prediction-drop motion": importances(pd_motion),
        "two-pass pruned": [item.block.name for item in two_pass[:PRUNED]],
        "cost": {
            "reward-drop": rd_cost,
            "prediction-drop": pd_cost,
            "reward-drop motion": rd_motion_cost,
            "prediction-drop motion": pd_motion_cost,
            "two-pass motion": tp_cost,
        },
    }


def least_important(scores: dict[str, float], names: list[str]) -> set[str]:
    """The ``PRUNED`` names of ``names`` with the lowest importance."""
    return set(sorted(names, key=scores.__getitem__)[:PRUNED])


def agreement(seed: int, runs: dict[int, dict], names: list[str], motion: list[str]) -> dict:
    """One seed's scorers against reward-drop on its own videos and on the other seeds' videos pooled."""
    run = runs[seed]
    others = [runs[other]["reward-drop"] for other in runs if other != seed]
    pooled = {name: statistics.fmean(other[name] for other in others) for name in names}

    def rho(scores: dict[str, float], reference: dict[str, float], subset: list[str]) -> float:
        return round(spearman([scores[n] for n in subset], [reference[n] for n in subset]), 3)

    def ratio(scorer: str, unit: str) -> float:
        return round(run["cost"][REFERENCE_COST[scorer]][unit] / run["cost"][scorer][unit], 2)

    same, other = least_important(run["reward-drop"], motion), least_important(pooled, motion)
    pd_pruned, tp_pruned = least_important(run["prediction-drop motion"], motion), set(run["two-pass pruned"])
    return {
        "seed": seed,
        "rho": {
            "prediction-drop vs reward-drop (same videos), 21 blocks": rho(
                run["prediction-drop"], run["reward-drop"], names
            ),
            "prediction-drop vs reward-drop (same videos), motion modules": rho(
                run["prediction-drop motion"], run["reward-drop"], motion
            ),
            "prediction-drop vs reward-drop (other videos), 21 blocks": rho(run["prediction-drop"], pooled, names),
            "prediction-drop vs reward-drop (other videos), motion modules": rho(
                run["prediction-drop motion"], pooled, motion
            ),
            "reward-drop vs reward-drop (other videos), 21 blocks": rho(run["reward-drop"], pooled, names),
            "reward-drop vs reward-drop (other videos), motion modules": rho(run["reward-drop"], pooled, motion),
        },
        "pruned modules shared with reward-drop, same videos": {
            "prediction-drop": len(same & pd_pruned),
            "two-pass": len(same & tp_pruned),
        },
        "pruned modules shared with reward-drop, other videos": {
            "reward-drop": len(other & same),
            "prediction-drop": len(other & pd_pruned),
            "two-pass": len(other & tp_pruned),
        },
        "cost ratio (reward-drop / scorer)": {
            f"{scorer}, {unit}": ratio(scorer, unit) for scorer in REFERENCE_COST for unit in ("evaluations", "seconds")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12, 13, 14, 15])
    parser.add_argument("--teacher", default="models/shapes-teacher")
    parser.add_argument("--videos", type=int, default=8, help="probe prompts per seed")
    parser.add_argument("--finalists", type=int, default=4, help="two-pass: motion modules ranked again by reward-drop")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--reuse", help="JSONL output of an earlier call with the same options: its seeds are not run again"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = load_plugins().registry("models").get("animatediff").from_options({"base": args.teacher})
    meter = Meter(teacher)
    names = [block.name for block in teacher.blocks()]
    motion = [block.name for block in teacher.blocks() if block.kind == "motion_module"]
    header = {"date": datetime.date.today().isoformat(), "teacher": args.teacher, "threads": args.threads}
    print(
        json.dumps(
            header | {"candidates": len(names), "motion_modules": len(motion), "settings": teacher.generation_settings}
        )
    )
    runs = {}
    if args.reuse:  # the seed lines of an earlier, interrupted call
        for line in Path(args.reuse).read_text().splitlines():
            record = json.loads(line)
            if record.get("seed") in args.seeds and "reward-drop" in record:
                runs[record["seed"]] = record
    for seed in args.seeds:
        if seed not in runs:
            runs[seed] = {"seed": seed} | measure_seed(seed, teacher, args, meter)
        print(json.dumps(runs[seed]), flush=True)
    rows = [agreement(seed, runs, names, motion) for seed in runs]
    for row in rows:
        print(json.dumps(row))
    summary: dict = {
        "summary": f"{len(rows)} seeds",
        "rho (mean, 95 % t-interval)": {key: interval([row["rho"][key] for row in rows]) for key in rows[0]["rho"]},
    }
    for group in (
        "pruned modules shared with reward-drop, same videos",
        "pruned modules shared with reward-drop, other videos",
    ):
        summary[f"{group} (mean, of {PRUNED})"] = {
            key: round(statistics.fmean(row[group][key] for row in rows), 2) for key in rows[0][group]
        }
    summary["cost ratio (median)"] = {
        key: statistics.median(row["cost ratio (reward-drop / scorer)"][key] for row in rows)
        for key in rows[0]["cost ratio (reward-drop / scorer)"]
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
