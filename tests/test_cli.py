"""The real ``vipkit`` command in subprocesses: exit codes, messages, a whole tiny run, resume."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TINY = ROOT / "recipes" / "tiny_vip.toml"


def vipkit(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as conftest does in-process: 2 threads on 2 shared cores crawl
    return subprocess.run(
        [sys.executable, "-m", "vipkit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_help_does_not_import_torch():
    code = "import sys\nfrom vipkit.cli import main\nsys.argv = ['vipkit', '--help']\ntry:\n    main()\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "compress" in out and "TORCH False" in out


def test_validate_shipped_recipes_ok():
    result = vipkit("validate", *[str(p) for p in sorted((ROOT / "recipes").glob("*.toml"))])
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("ok") == len(list((ROOT / "recipes").glob("*.toml")))


def test_bad_recipe_exit_code_2_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("beta = 5000", "beta = -5").replace('name = "block"', 'name = "blocks"'))
    result = vipkit("compress", "--recipe", str(bad), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert (
        "losses[0].beta" in result.stderr and "pruner.name" in result.stderr and "Did you mean 'block'" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_syntax_error_exit_code_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1\n")
    result = vipkit("validate", str(bad))
    assert result.returncode == 2 and "line 1" in result.stderr and "Traceback" not in result.stderr


def _shipped_matrix_copy(folder: Path, edit: tuple[str, str] = ("", "")) -> Path:
    """benchmarks/shapes_bench.toml (edited) in ``folder``/benchmarks, with its prompts and a stand-in for each saved model it names."""
    shipped = ROOT / "benchmarks" / "shapes_bench.toml"
    text = shipped.read_text()
    assert edit[0] in text
    matrix = folder / "benchmarks" / shipped.name
    shutil.copytree(ROOT / "benchmarks" / "prompts", matrix.parent / "prompts")
    matrix.write_text(text.replace(*edit))
    for line in text.splitlines():
        if line.startswith("path = "):  # validation looks for the manifest only
            manifest = matrix.parent / line.split('"')[1] / "vipkit_model.json"
            manifest.parent.mkdir(parents=True)
            manifest.write_text("{}")
    return matrix


def test_validate_tells_a_bench_matrix_from_a_recipe(tmp_path):
    matrix = _shipped_matrix_copy(tmp_path / "good")
    result = vipkit("validate", str(matrix), str(TINY))
    assert result.returncode == 0, result.stderr
    assert f"ok {matrix} (bench matrix)" in result.stderr and f"ok {TINY}\n" in result.stderr
    broken = _shipped_matrix_copy(
        tmp_path / "broken", ('base = "models/shapes-teacher"', 'bsae = "models/shapes-teacher"')
    )
    result = vipkit("validate", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"bench matrix {broken} has 1 problem" in result.stderr
        and "models[0].bsae: unknown option; did you mean 'base'?" in result.stderr
    )


def test_plugins_lists_every_component():
    result = vipkit("plugins", "--json")
    assert result.returncode == 0, result.stderr
    listed = {
        (kind, name)
        for info in json.loads(result.stdout)
        for kind, names in info["components"].items()
        for name in names
    }
    for expected in [
        ("models", "animatediff"),
        ("rewards", "clip"),
        ("losses", "redpo"),
        ("losses", "sft"),
        ("losses", "kd"),
        ("scorers", "reward-drop"),
        ("pruners", "block"),
        ("curators", "degraded-dimensions"),
    ]:
        assert expected in listed


def test_dry_run_shows_plan_and_writes_nothing(tmp_path):
    result = vipkit("compress", "--recipe", str(TINY), "--out", str(tmp_path / "run"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "reward-drop" in result.stderr and "2 × prune blocks of kinds motion_module" in result.stderr
    assert "float32 master copies" in result.stderr and "2 pairs per step on 8 processes" in result.stderr
    estimate = re.search(
        r"model on the CPU: at least ([\d,.]+) s per video: 4 steps × ([\d,.]+) GFLOP", " ".join(result.stderr.split())
    )
    assert estimate and float(estimate[1].replace(",", "")) > 0 and float(estimate[2]) > 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_set_changes_the_plan_and_a_bad_one_exits_2(tmp_path):
    result = vipkit(
        "compress",
        "--recipe",
        str(TINY),
        "--dry-run",
        "--set",
        "schedule.stages=3",
        "--set",
        "train.trainable_dtype=model",
    )
    assert result.returncode == 0, result.stderr
    assert "3 × prune blocks" in result.stderr and "trained in place in the model's dtype" in result.stderr
    bad = vipkit("validate", str(TINY), "--set", "train.epochs=many")
    assert bad.returncode == 2 and "train.epochs: Input should be a valid integer, got 'many'" in bad.stderr, bad.stderr


def _weights_digest(directory: Path) -> dict[str, str]:
    """Hashes of every weight file and the manifest's removal record (configs hold load paths, which differ)."""
    files = sorted(directory.rglob("*.safetensors"))
    digests = {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    manifest = json.loads((directory / "vipkit_model.json").read_text())
    weights = {name: digest for name, digest in manifest.pop("files").items() if name.endswith(".safetensors")}
    assert weights == digests  # the manifest vouches for exactly these weights
    return digests | {"vipkit_model.json": json.dumps(manifest, sort_keys=True)}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = vipkit("compress", "--recipe", str(TINY), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_tiny_run_writes_the_contract(tiny_run):
    out, result = tiny_run
    results = json.loads((out / "results.json").read_text())
    teacher = results["teacher"]
    assert len(results["stages"]) == 2
    params = [teacher["parameters"]]
    for stage in results["stages"]:
        assert len(stage["removed_blocks"]) == 1
        assert stage["pruned"]["parameters"] == stage["distilled"]["parameters"] < params[-1]
        params.append(stage["pruned"]["parameters"])
        assert set(stage["distilled"]["scores"]) == {"clip_score", "frame_consistency"}
        assert stage["distilled"]["denoiser_flops"] < teacher["denoiser_flops"]
    assert results["final"]["parameters"] == params[-1]
    assert any(stage["train"]["steps"] > 0 for stage in results["stages"])
    for name in (
        "recipe.toml",
        "resolved.json",
        "environment.json",
        "metrics.jsonl",
        "report.md",
        "samples/teacher.gif",
        "samples/teacher.mp4",
        "samples/stage-002-distilled.mp4",
    ):
        assert (out / name).exists(), name
    env = json.loads((out / "environment.json").read_text())
    assert env["seed"] == 0 and env["versions"]["torch"].startswith("2.")
    assert "| teacher |" in result.stdout
    # where the time went: every phase of every stage, the teacher's own latency, and the sum
    for stage in results["stages"]:
        assert {"importance scoring", "evaluation", "pair curation", "training", "saving"} <= set(stage["seconds"])
        assert stage["distilled"]["seconds_per_video"] > 0
    assert {"load", "teacher videos"} <= set(results["run_seconds"]) and teacher["seconds_per_video"] > 0
    assert results["seconds"]["training"] == pytest.approx(
        sum(stage["seconds"]["training"] for stage in results["stages"])
    )
    assert results["final"]["speedup"] == pytest.approx(
        teacher["seconds_per_video"] / results["stages"][-1]["distilled"]["seconds_per_video"]
    )
    report = (out / "report.md").read_text()
    assert "## Where the time went (seconds)" in report and "| stage 2 |" in report and "s/video" in report


def test_compressed_model_reloads_and_generates(tiny_run):
    import torch

    import vipkit

    out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    model = vipkit.load_model(str(out / "model"))
    assert model.num_parameters() == results["final"]["parameters"]
    assert model.removed_blocks == results["final"]["removed_blocks"]
    videos = model.generate(["a red ball rolling left"], [0]).videos
    assert videos.shape[0] == 1 and videos.min() >= 0 and videos.max() <= 1
    pipe = vipkit.load(str(out / "model"))
    assert type(pipe).__name__ == "AnimateDiffPipeline"
    assert sum(p.numel() for p in pipe.unet.parameters()) == results["final"]["parameters"]
    assert torch.isfinite(videos).all()


def test_same_recipe_and_seed_give_a_bit_identical_model_and_resume_finishes_a_stage(tiny_run, tmp_path):
    out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    # Simulate a kill during stage 2's training: its pairs are stored, its checkpoint and the final model are not.
    shutil.rmtree(copy / "stages" / "stage-002")
    shutil.rmtree(copy / "model")
    (copy / "results.json").unlink()
    result = vipkit("compress", "--recipe", str(TINY), "--out", str(copy))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming after stage 1" in result.stderr and "reusing the stored pruning decision" in result.stderr, (
        result.stderr
    )
    digest = _weights_digest(out / "model")
    assert len(digest) >= 4 and _weights_digest(copy / "model") == digest


def test_other_recipe_on_same_run_dir_is_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "other.toml"
    other.write_text(TINY.read_text().replace("seed = 0", "seed = 1"))
    result = vipkit("compress", "--recipe", str(other), "--out", str(out))
    assert result.returncode == 2 and "different recipe" in result.stderr


def _front_matter(card: str) -> dict:
    import yaml

    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_finished_run_has_a_model_card_and_exports_as_a_diffusers_pipeline(tiny_run, tmp_path):
    import torch
    from diffusers import AnimateDiffPipeline

    from vipkit import load

    out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    card = (out / "model" / "README.md").read_text()
    front = _front_matter(card)
    assert front["pipeline_tag"] == "text-to-video" and front["library_name"] == "vipkit"
    assert "animatediff" in front["tags"] and "license" not in front  # the base model's license: the user's to set
    assert "| stage 2 distilled |" in card and f"{results['final']['parameters']:,}" in card
    assert (out / "model" / "samples" / "stage-002-distilled.gif").is_file()
    assert "![sample videos of the compressed model](samples/stage-002-distilled.gif)" in card
    exported = tmp_path / "export"
    result = vipkit("export", str(out), "--format", "diffusers", "--out", str(exported))
    assert result.returncode == 0, result.stderr
    assert "2 removed blocks written as zeros" in result.stderr
    card = (exported / "README.md").read_text()
    assert _front_matter(card)["library_name"] == "diffusers"
    assert f'AnimateDiffPipeline.from_pretrained("{exported}"' in card and "```toml" in card
    assert (exported / "samples" / "stage-002-distilled.mp4").is_file()
    call = dict(
        prompt="a red ball rolling left", num_frames=8, height=32, width=32, num_inference_steps=4, output_type="pt"
    )
    plain = AnimateDiffPipeline.from_pretrained(exported)(generator=torch.Generator().manual_seed(0), **call)
    ours = load(out / "model")(generator=torch.Generator().manual_seed(0), **call)
    assert abs(plain.frames - ours.frames).max() <= 1e-6


def test_export_errors_are_one_paragraph_with_exit_code_2(tiny_run, tmp_path):
    from vipkit.plugins import load_plugins
    from vipkit.saved_model import save_model

    out, _ = tiny_run
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out, unfinished, ignore=shutil.ignore_patterns("model", "results.json"))
    family = load_plugins().registry("models").get("videocrafter2")
    paired = family(family.Config(preset="tiny"))
    paired.remove_block(paired.blocks_of(["encoder_decoder_pair"])[0].name)
    save_model(paired, tmp_path / "paired", {"trained_scope": None})
    cases = [
        (("export", str(unfinished), "--format", "diffusers", "--out", str(tmp_path / "c")), "has not finished"),
        (("export", str(tmp_path / "paired"), "--format", "official", "--out", str(tmp_path / "d")), "no zero form"),
        (("export", str(out), "--format", "onnx", "--out", str(tmp_path / "a")), "--format 'onnx' is not a format"),
        (("export", str(tmp_path), "--format", "diffusers", "--out", str(tmp_path / "b")), "neither a vipkit run"),
        (("export", str(out), "--format", "diffusers", "--out", str(unfinished)), "exists and is not empty"),
        (("export", str(out), "--format", "diffusers", "--out", str(out), "--overwrite"), "would replace the model"),
    ]
    for args, message in cases:
        result = vipkit(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
