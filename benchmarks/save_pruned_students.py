"""Save a run's pruned-before-distillation students, so ``vipkit bench`` can score them next to the rest.

A run stores each stage's pruning decision (``stages/stage-NNN.pairs/prune.json``) and the distilled
model, not the pruned one; this rebuilds stage N's pruned student (stage N-1's distilled model, or the
teacher, minus stage N's blocks) and saves it as ``RUN/pruned-stage-NNN``.

    python benchmarks/save_pruned_students.py runs/shapes --teacher-base models/shapes-teacher
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vipkit.plugins import load_plugins
from vipkit.saved_model import load_saved_model, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished vipkit compress run folder (animatediff family)")
    parser.add_argument("--teacher-base", required=True, help="the teacher's [model] base (a folder or hub id)")
    args = parser.parse_args()
    before = load_plugins().registry("models").get("animatediff").from_options({"base": args.teacher_base})
    for pairs in sorted(args.run.glob("stages/stage-*.pairs")):
        stage = int(pairs.name.split("-")[1].split(".")[0])
        pruned = before.copy()
        for name in json.loads((pairs / "prune.json").read_text(encoding="utf-8"))["removed_blocks"]:
            pruned.remove_block(name)
        save_model(pruned, args.run / f"pruned-stage-{stage:03d}")
        print(f"stage {stage}: {pruned.num_parameters():,} parameters -> {args.run / f'pruned-stage-{stage:03d}'}")
        before = load_saved_model(args.run / "stages" / f"stage-{stage:03d}" / "model")


if __name__ == "__main__":
    main()
