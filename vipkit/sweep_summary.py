"""What a sweep reports: each run's numbers read from its results.json, then per variant their mean, spread and 95 %
t-interval over the seeds, and each variant's difference from the baseline, seed by seed where the prompts allow.

A measure is named ``PROMPTS:NAME``: ``heldout:objective`` and ``heldout:<dimension>`` (the final model on the
held-out prompts), ``heldout_reward:<dimension>`` (the held-out reward on them), ``eval:objective`` and
``eval:<dimension>`` (the final model on the run's evaluation prompts); ``KEY/teacher`` is the same number over the
teacher's of the same run (the same prompts and video seeds), and ``parameter_ratio`` the final model's parameters
over the teacher's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vipkit.sweep_stats import describe, paired_difference, welch_difference

if TYPE_CHECKING:
    from vipkit.sweep_plan import SweepPlan

OF_TEACHER = "/teacher"


def run_measures(results: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(the final model's measures, the teacher's) of one run's ``results.json``."""
    teacher = results["teacher"]
    final = results["stages"][-1]["distilled"] if results["stages"] else teacher
    model: dict[str, float] = {}
    reference: dict[str, float] = {}

    def add(prefix: str, ours: dict[str, float], theirs: dict[str, float]) -> None:
        for name, value in ours.items():
            key = f"{prefix}:{name}"
            model[key], reference[key] = value, theirs[name]
            if theirs[name]:
                model[key + OF_TEACHER] = value / theirs[name]

    if "heldout" in teacher:
        add("heldout", _with_objective(final["heldout"]), _with_objective(teacher["heldout"]))
        if "reward" in teacher["heldout"]:
            add("heldout_reward", final["heldout"]["reward"], teacher["heldout"]["reward"])
    add("eval", _with_objective(final), _with_objective(teacher))
    model["parameter_ratio"] = results["final"]["parameter_ratio"]
    return model, reference


def _with_objective(entry: dict[str, Any]) -> dict[str, float]:
    return {"objective": entry["objective"], **entry["scores"]}


def prompt_set(measure: str) -> str:
    """Which prompts a measure comes from, "heldout" or "eval" (``Variant.prompts``): what must be equal to pair two
    variants."""
    return "heldout" if measure.startswith("heldout") else "eval"


def primary(sweep: dict[str, Any]) -> str:
    """The prompt set a sweep is judged on: the held-out prompts when the runs have them, else the evaluation ones."""
    return "heldout" if "heldout:objective" in sweep["measures"] else "eval"


def baselines(sweep: dict[str, Any]) -> dict[str, str]:
    """Each compared variant of sweep.json and the variant it is compared with, in the sweep's order (baselines left
    out)."""
    return {v["name"]: v["baseline"] for v in sweep["variants"] if v["baseline"]}


def compared_with(sweep: dict[str, Any]) -> str:
    """The baseline as a heading says it: one variant, or one variant at each value of the swept key."""
    fixed = len(set(baselines(sweep).values())) == 1
    return sweep["baseline"] if fixed else f"{sweep['baseline']} at the same {sweep['curve']}"


def summarize(plan: SweepPlan, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of sweep.json from its ``runs`` records (``measures`` and ``teacher`` of each finished run):
    ``measures`` (their names, in order), ``teacher`` (over the baseline's runs), ``statistics`` and ``differences``
    per variant (intervals as ``Interval.as_dict``, each difference with ``paired``)."""
    done = [run for run in runs if run.get("measures")]
    measures = list(dict.fromkeys(key for run in done for key in run["measures"]))
    values: dict[str, dict[str, dict[int, float]]] = {}  # variant -> measure -> seed -> value
    for run in done:
        for key, value in run["measures"].items():
            values.setdefault(run["variant"], {}).setdefault(key, {})[run["seed"]] = value
    teacher: dict[str, dict[int, float]] = {}
    for run in done:
        if plan.baseline_of(run["variant"]) is None:
            for key, value in run["teacher"].items():
                teacher.setdefault(key, {})[run["seed"]] = value
    statistics, differences = {}, {}
    for variant in plan.variants:
        ours = values.get(variant.name, {})
        statistics[variant.name] = {
            key: describe(list(ours[key].values())).as_dict() for key in measures if key in ours
        }
        base = plan.baseline_of(variant.name)
        if base is None:
            continue
        baseline = values.get(base, {})
        differences[variant.name] = {}
        for key in measures:
            if key not in ours or key not in baseline:
                continue
            paired = plan.paired(variant.name, prompt_set(key))
            difference = (
                paired_difference(ours[key], baseline[key])
                if paired
                else welch_difference(list(ours[key].values()), list(baseline[key].values()))
            )
            if difference is not None:
                differences[variant.name][key] = difference.as_dict() | {"paired": paired}
    return {
        "measures": measures,
        "teacher": {key: describe(list(seeds.values())).as_dict() for key, seeds in teacher.items()},
        "statistics": statistics,
        "differences": differences,
    }
