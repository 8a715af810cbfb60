"""One sweep's statistics from the records of sweeps that ran its runs elsewhere (benchmarks/RESULTS.md §17).

The GPU machine returns each sweep's sweep.json and the runs' records but not their models (benchmarks/gpu_sweep.sh:
the device tool returns 64 MiB a call), so `vipkit sweep` here cannot reuse those runs. This script takes the runs
of SWEEP_FILE from the sweep.json files of the given folders, matched by recipe fingerprint (a run counts only if its
recipe is exactly the one the sweep file makes), and writes sweep.json, sweep.md, sweep.csv and the plots into OUT
with vipkit's own sweep writer; runs found nowhere stay "pending" and are named.

    python benchmarks/merge_sweep_records.py SWEEP_FILE OUT FOLDER...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vipkit.sweep import pending_record, write_outputs
from vipkit.sweep_plan import load_sweep

KEPT = ("status", "error", "seconds", "measures", "teacher")


def main(sweep_file: str, out: str, *folders: str) -> None:
    plan = load_sweep(Path(sweep_file), None)
    finished = {}
    for folder in folders:
        for record in json.loads((Path(folder) / "sweep.json").read_text(encoding="utf-8"))["runs"]:
            if record["status"] == "finished":
                finished[record["fingerprint"]] = {key: record[key] for key in KEPT} | {"reused": True}
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    records = [pending_record(run, target) | finished.get(run.recipe.fingerprint(), {}) for run in plan.runs]
    write_outputs(plan, records, target, plots=True)
    missing = [f"{r['variant']} seed {r['seed']}" for r in records if r["status"] != "finished"]
    print(f"{len(records) - len(missing)} of {len(records)} runs found; missing: {', '.join(missing) or 'none'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
