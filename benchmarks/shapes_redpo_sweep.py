"""Which distillation settings make V.I.P. recover on the shapes world? Run recipe variants side by side.

Each variant is ``recipes/shapes_vip.toml`` with some keys overridden; all run in parallel as real
``vipkit compress`` subprocesses (``--threads`` torch threads each), and the per-stage objective of
each lands in ``OUT/sweep.json`` and a markdown table ``OUT/sweep.md`` as soon as it finishes.

    python benchmarks/shapes_redpo_sweep.py --out DIR [--only NAME,NAME] [--jobs 7 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "recipes" / "shapes_vip.toml"

MORE_DATA = {"prompts.videos_per_prompt": 4}
PAPER_SFT = {"losses.0.sft_weight": 1e4}
STUDENT_REF = {**MORE_DATA, "losses.0.reference": "student_init", "train.learning_rate": 1e-4}
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "paper-sft": PAPER_SFT,
    "paper-sft-lr1e-4": {**PAPER_SFT, "train.learning_rate": 1e-4},
    "student-ref-lr1e-4": {"losses.0.reference": "student_init", "train.learning_rate": 1e-4},
    "more-data-paper-sft-lr1e-4": {**MORE_DATA, **PAPER_SFT, "train.learning_rate": 1e-4},
    "more-data-student-ref-lr1e-4": {**MORE_DATA, "losses.0.reference": "student_init", "train.learning_rate": 1e-4},
    "more-data-sft-only-lr1e-4": {**MORE_DATA, "losses.0.dpo_weight": 0.0, "train.learning_rate": 1e-4},
    "more-data-sft-only-uncond": {
        **MORE_DATA,
        "losses.0.dpo_weight": 0.0,
        "train.learning_rate": 1e-4,
        "losses.0.uncond_weight": 1.0,
    },
    "more-data-student-ref-uncond": {**STUDENT_REF, "losses.0.uncond_weight": 1.0},
    "more-data-student-ref-all": {**STUDENT_REF, "train.trainable": "all"},
    "more-data-student-ref-all-uncond": {**STUDENT_REF, "train.trainable": "all", "losses.0.uncond_weight": 1.0},
    "more-data-sft-only-all-uncond": {
        **MORE_DATA,
        "losses.0.dpo_weight": 0.0,
        "train.learning_rate": 1e-4,
        "train.trainable": "all",
        "losses.0.uncond_weight": 1.0,
    },
    "more-data-paper-sft-uncond": {
        **MORE_DATA,
        **PAPER_SFT,
        "train.learning_rate": 1e-4,
        "losses.0.uncond_weight": 1e4,
    },
}


def toml_value(value: object) -> str:
    return (
        json.dumps(value) if isinstance(value, str) else repr(value).lower() if isinstance(value, bool) else repr(value)
    )


def write_recipe(overrides: dict, path: Path) -> None:
    """The base recipe with dotted-key overrides; ``losses.N.key`` addresses the N-th [[losses]] entry."""
    recipe = tomllib.loads(BASE.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        node: object = recipe
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})  # type: ignore[index]
        node[leaf] = value  # type: ignore[index]
    base_dir = BASE.parent
    for key in ("train_file", "eval_file"):
        if key in recipe["prompts"]:
            recipe["prompts"][key] = str(base_dir / recipe["prompts"][key])
    recipe["model"]["base"] = str(ROOT / recipe["model"]["base"])
    path.write_text(dump_toml(recipe), encoding="utf-8")


def dump_toml(recipe: dict) -> str:
    lines: list[str] = []
    scalars = {k: v for k, v in recipe.items() if not isinstance(v, (dict, list))}
    lines += [f"{k} = {toml_value(v)}" for k, v in scalars.items()]
    for key, value in recipe.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            for k, v in value.items():
                lines.append(f"{k} = {json.dumps(v) if isinstance(v, (list, dict)) else toml_value(v)}")
        elif isinstance(value, list):
            for item in value:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def run_variant(name: str, out: Path, threads: int) -> dict:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.toml"
    write_recipe(VARIANTS[name], recipe)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        code = subprocess.call(
            [sys.executable, "-m", "vipkit", "compress", "--recipe", str(recipe), "--out", str(folder / "run")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    row: dict = {"variant": name, "overrides": VARIANTS[name], "exit": code, "seconds": time.perf_counter() - started}
    results = folder / "run" / "results.json"
    if code == 0 and results.exists():
        data = json.loads(results.read_text())
        row["teacher"] = data["teacher"]["objective"]
        row["stages"] = [
            {
                "pruned": s["pruned"]["objective"],
                "distilled": s["distilled"]["objective"],
                "pairs": s["pairs"],
                "steps": s["train"]["steps"],
                "distilled_scores": s["distilled"]["scores"],
            }
            for s in data["stages"]
        ]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | teacher | s1 pruned | s1 distilled | s2 pruned | s2 distilled | pairs | steps | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "stages" not in row:
            lines.append(f"| {row['variant']} | failed (exit {row['exit']}) | | | | | | | |")
            continue
        s1, s2 = row["stages"]
        lines.append(
            f"| {row['variant']} | {row['teacher']:.4f} | {s1['pruned']:.4f} | {s1['distilled']:.4f} | {s2['pruned']:.4f} | "
            f"{s2['distilled']:.4f} | {s1['pairs']}/{s2['pairs']} | {s1['steps']}/{s2['steps']} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    rows: list[dict] = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(run_variant, n, args.out, args.threads) for n in names]):
            rows.append(row := future.result())
            print(json.dumps(row), flush=True)
            (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
            (args.out / "sweep.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
