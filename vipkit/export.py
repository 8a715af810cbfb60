"""``vipkit export``: a compressed model in a format people load elsewhere, with a model card.

The formats are the model family's (``VideoModel.export_formats``); vipkit finds the model (a finished run's
``model/``, a stage's ``model/`` or any model folder), checks its files, has the family write the format into
a staging folder, adds a README.md model card, the run's samples and ``vipkit_export.json`` (format, family,
generation settings, file digests), and renames the folder into place: an interrupted export leaves nothing
half-written under ``--out``.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    from vipkit.interfaces import VideoModel

EXPORT_MANIFEST = "vipkit_export.json"
DTYPES = ("float32", "bfloat16", "float16")


def export_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a folder ``export`` wrote; None for any other folder."""
    path = Path(folder).expanduser() / EXPORT_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VipkitError(f"cannot read {path}: {exc}") from None
    if not isinstance(manifest, dict):
        raise VipkitError(f"{path} is corrupt: it holds a JSON {type(manifest).__name__}, not an object")
    if "files" in manifest:  # every name inside the folder, checked wherever the manifest is read
        from vipkit.weights import check_manifest_files

        check_manifest_files(path.parent, manifest["files"], EXPORT_MANIFEST)
    return manifest


@dataclass(frozen=True)
class ModelOrigin:
    """A model folder and, when it came out of a run, that run and the stage whose videos show it."""

    model: Path
    run: Path | None = None
    stage: int | None = None


def find_model(source: Path) -> ModelOrigin:
    """The model folder ``source`` names: a finished run (its ``model/``), a stage folder or a model folder."""
    from vipkit.saved_model import MANIFEST

    source = Path(source).expanduser()
    if not source.is_dir():
        raise VipkitError(
            f"{source}: no such folder; give a finished run folder (vipkit compress --out) or a model folder"
        )
    if (source / MANIFEST).is_file():
        return _origin_of(source)
    if (source / "model" / MANIFEST).is_file():  # a finished run, or a stage folder
        return _origin_of(source / "model")
    if (source / "resolved.json").is_file():  # a run that has not finished
        stages = sorted(p.parent for p in (source / "stages").glob("stage-???/model/" + MANIFEST))
        finished = (
            f" Its finished stages' models can be exported: {', '.join(str(p) for p in stages)}." if stages else ""
        )
        raise VipkitError(
            f"{source} is a run that has not finished (no model/ yet): run the `vipkit compress ... --out {source}` "
            f"command that started it again to resume it, then export.{finished}"
        )
    raise VipkitError(
        f"{source} is neither a vipkit run folder nor a model folder (no {MANIFEST} in it or in {source / 'model'})"
    )


def _origin_of(model: Path) -> ModelOrigin:
    parent = model.parent
    if (parent / "resolved.json").is_file():  # RUN/model: the final stage
        results = _read_json(parent / "results.json")
        stages = results.get("stages", []) if results else []
        return ModelOrigin(model, parent, stages[-1]["stage"] if stages else None)
    match = re.fullmatch(r"stage-(\d{3})", parent.name)
    if match and (parent.parent.parent / "resolved.json").is_file():  # RUN/stages/stage-NNN/model
        return ModelOrigin(model, parent.parent.parent, int(match[1]))
    return ModelOrigin(model)


def export_model(
    source: Path,
    format: str,
    out: Path,
    *,
    dtype: str | None = None,
    bench: Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the model ``source`` names as ``format`` into ``out``; returns the export's manifest."""
    from vipkit import __version__
    from vipkit.atomic import staged_directory, write_json, write_text
    from vipkit.model_card import model_card
    from vipkit.plugins import load_plugins
    from vipkit.saved_model import load_saved_model, verify_saved_model
    from vipkit.weights import file_digests

    origin = find_model(source)
    manifest = verify_saved_model(origin.model)
    family = str(manifest.get("family"))
    cls = load_plugins().registry("models").get(family)
    if format not in cls.export_formats:
        known = "; ".join(f"{name!r}: {what}" for name, what in cls.export_formats.items())
        raise VipkitError(
            f"--format {format!r} is not a format of {family} models"
            + (f"; choose one of {known}" if known else f": the {family} family exports no formats")
        )
    _refuse_resized(manifest, format, origin.model)
    if dtype is not None and dtype not in DTYPES:
        raise VipkitError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    out = Path(out).expanduser()
    protected = [origin.model, *([origin.run] if origin.run else [])]
    if any(out.resolve() == p.resolve() or p.resolve().is_relative_to(out.resolve()) for p in protected):
        raise VipkitError(
            f"--out {out} would replace the model being exported (or the run holding it); choose a folder outside "
            f"{origin.run or origin.model}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise VipkitError(f"--out {out} exists and is not empty; choose another folder or pass --overwrite")
    bench_results = _bench_results(bench) if bench is not None else None
    model = load_saved_model(origin.model)
    dtype = dtype or str(model.generation_settings.get("dtype", "float32"))
    provenance = manifest.get("provenance", {})
    with staged_directory(out) as staging:
        usage = model.export(staging, format, dtype=dtype, provenance=provenance)
        samples = _copy_samples(origin, staging)
        usage = usage.replace("THIS_FOLDER", str(out))
        facts = _card_facts(model, origin, usage, samples, bench_results, provenance, library_name=model.library_name)
        write_text(staging / "README.md", model_card(facts))
        record = {
            "family": family,
            "format": format,
            "dtype": dtype,
            "vipkit_version": __version__,
            "source": str(origin.model),
            "zeroed_blocks": model.removed_blocks,
            "parameters_computed_by_vipkit": model.num_parameters(),
            "generation_settings": {**model.generation_settings, "dtype": dtype},
            "provenance": provenance,  # the saved model's record of its making (vipkit.provenance), as it was
            "files": file_digests(staging),
        }
        write_json(staging / EXPORT_MANIFEST, record)
    return record


def _refuse_resized(manifest: dict[str, Any], format: str, model: Path) -> None:
    """A width-pruned model (``resized_layers`` in its manifest) has no export: every format writes its family's
    architecture config, which holds one head count and one feed-forward width for all layers of a kind, so a plain
    loader would refuse the narrower weights; padded with zeros they would at best compute the same model at the full
    cost (and another one where a norm spans all heads, as Wan's query and key norms do)."""
    resized = manifest.get("resized_layers") or {}
    if not resized:
        return
    path, record = next(iter(resized.items()))
    example = ", ".join(f"{key} {value}" for key, value in record.get("attributes", {}).items())
    raise VipkitError(
        f"--format {format!r} cannot hold this model: width pruning made {len(resized)} of its layers narrower than its "
        f"{manifest.get('family')} architecture's config says (e.g. {path}{f': {example}' if example else ''}), and the "
        "format's config holds one width per kind of layer, so a plain loader would refuse the weights or build another "
        f'model. Load the model folder itself instead: vipkit.load("{model}"), or [model] base = "{model}" in a recipe '
        "or bench matrix (it keeps the smaller layers and their speed-up)."
    )


def write_model_card(model: VideoModel, model_dir: Path) -> None:
    """The README.md of a model folder vipkit wrote (``RUN/model``, after its run's results.json)."""
    from vipkit.atomic import write_text
    from vipkit.model_card import model_card
    from vipkit.saved_model import read_manifest

    origin = _origin_of(model_dir)
    samples = _copy_samples(origin, model_dir)
    usage = f'```python\nimport vipkit\n\npipe = vipkit.load("{model_dir}")  # {_pipeline_line(model)}\n```\n\n' + (
        f"Formats other libraries load: `vipkit export {model_dir} --format FORMAT --out DIR` with FORMAT one of "
        + "; ".join(f"`{name}` ({what})" for name, what in type(model).export_formats.items())
        if type(model).export_formats
        else ""
    )
    facts = _card_facts(model, origin, usage, samples, None, read_manifest(model_dir).get("provenance", {}))
    write_text(model_dir / "README.md", model_card(facts))


def load_export(folder: Path, manifest: dict[str, Any], **options: Any) -> VideoModel:
    """A model from a folder ``export`` wrote, through its family's options for that format (the zeroed blocks are
    removed again on loading, which keeps the speed-up); ``options`` go over them."""
    from vipkit.plugins import load_plugins
    from vipkit.weights import check_manifest_files, refuse_pickle_files, verify_digests

    files = check_manifest_files(folder, manifest["files"], EXPORT_MANIFEST) if "files" in manifest else None
    refuse_pickle_files(folder)  # an export holds safetensors only: a pickle file in it is foreign
    if files is not None:
        verify_digests(folder, files, EXPORT_MANIFEST)
    cls = load_plugins().registry("models").get(str(manifest.get("family")))
    return cls(cls.Config(**{**cls.export_options(folder, manifest), **options}))


def _pipeline_line(model: VideoModel) -> str:
    try:
        return f"a {type(model.pipeline()).__name__}; vipkit.load_model gives the VideoModel"
    except NotImplementedError:
        return "vipkit.load_model gives the VideoModel"


def _card_facts(
    model: VideoModel,
    origin: ModelOrigin,
    usage: str,
    samples: list[str],
    bench: dict[str, Any] | None,
    provenance: dict[str, Any],
    library_name: str = "vipkit",
) -> Any:
    from vipkit.model_card import CardFacts

    results = _read_json(origin.run / "results.json") if origin.run else None
    recipe = origin.run / "recipe.toml" if origin.run else None
    return CardFacts(
        family=model.name,
        usage=usage,
        library_name=library_name,
        base_models=list(provenance.get("base_models", [])),
        parameters=model.num_parameters(),
        removed_blocks=model.removed_blocks,
        results=results if results and origin.model.parent == origin.run else None,
        recipe_text=recipe.read_text(encoding="utf-8") if recipe and recipe.is_file() else None,
        bench=bench,
        samples=samples,
    )


def _copy_samples(origin: ModelOrigin, folder: Path) -> list[str]:
    """The model's evaluation sample (GIF and MP4) copied into ``folder/samples``; their relative paths."""
    if origin.run is None or origin.stage is None:
        return []
    copied = []
    for source in sorted((origin.run / "samples").glob(f"stage-{origin.stage:03d}-distilled.*")):
        (folder / "samples").mkdir(exist_ok=True)
        shutil.copyfile(source, folder / "samples" / source.name)
        copied.append(f"samples/{source.name}")
    return sorted(copied, key=lambda path: not path.endswith(".gif"))


def _bench_results(bench: Path) -> dict[str, Any]:
    path = Path(bench).expanduser()
    path = path / "bench.json" if path.is_dir() else path
    results = _read_json(path)
    if not results or "models" not in results:
        raise VipkitError(f"--bench {bench}: no bench.json with results there (the --out folder of `vipkit bench`)")
    return results


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
