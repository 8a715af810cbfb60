"""Exports at AnimateDiff's real size (CPU, random weights): seconds and disk of `vipkit export` per format.

The `random` preset (SD-1.5 UNet + motion adapter v1-5-2, bf16) loses 15 of its 21 motion modules (the paper's
-67.5 %), is saved as a run saves it, exported as a diffusers pipeline and as a motion adapter, and the pipeline
export is loaded back by vipkit (its zeroed modules removed again). Prints one JSON line per finding.

    python benchmarks/export_full_size.py --out /tmp/export-full
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # runs from a checkout without installing vipkit

import vipkit  # noqa: E402
from vipkit.export import export_model  # noqa: E402
from vipkit.plugins import load_plugins  # noqa: E402
from vipkit.saved_model import save_model  # noqa: E402


def gigabytes(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e9, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (about 6 GB)")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    family = load_plugins().registry("models").get("animatediff")
    model = family(family.Config(preset="random", dtype="bfloat16"))
    for block in family.blocks_of(model, ["motion_module"])[:15]:
        model.remove_block(block.name)
    save_model(model, args.out / "model", {"trained_scope": "motion", "base_models": []})
    found = {"parameters": model.num_parameters(), "model_gb": gigabytes(args.out / "model")}
    del model
    for format in ("diffusers", "motion-adapter"):
        started = time.perf_counter()
        export_model(args.out / "model", format, args.out / format)
        found |= {f"{format}_s": round(time.perf_counter() - started, 1), f"{format}_gb": gigabytes(args.out / format)}
        print(json.dumps(found), flush=True)
    started = time.perf_counter()
    back = vipkit.load_model(args.out / "diffusers")
    found |= {
        "load_export_s": round(time.perf_counter() - started, 1),
        "reloaded_parameters": back.num_parameters(),
        "reloaded_zeroed_removed": len(back.removed_blocks),
    }
    print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
