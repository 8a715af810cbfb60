"""The shipped shapes-world teachers really follow their prompts (scored by the analytic reward), and the
training that made them (``python -m vipkit_shapes.train_teacher``) still writes folders like theirs."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vipkit.plugins import load_plugins
from vipkit_shapes.reward import ShapesReward
from vipkit_shapes.teacher_architectures import TEACHERS
from vipkit_shapes.teacher_checkpoint import architecture, read_state
from vipkit_shapes.train_teacher import main as train_teacher
from vipkit_shapes.world import describe, sample_scenes

MODELS = Path(__file__).parents[1] / "models"
PARAMETERS = {"shapes-teacher": 1_515_304, "shapes-teacher-fast": 395_928}
ARCHITECTURES = {"shapes-teacher": "shipped", "shapes-teacher-fast": "fast"}  # train_teacher --architecture
VERSION_KEYS = ("transformers_version", "_diffusers_version")  # of the library that wrote the file, not of the model


@pytest.fixture(scope="module", params=sorted(PARAMETERS))
def named_teacher(request):
    """(folder name, loaded model) for each teacher in models/."""
    return request.param, load_plugins().registry("models").get("animatediff").from_options(
        {"base": str(MODELS / request.param)}
    )


def test_teacher_loads_with_its_architecture(named_teacher):
    name, teacher = named_teacher
    assert teacher.num_parameters() == PARAMETERS[name]
    assert sum(b.kind == "motion_module" for b in teacher.blocks()) == 7
    assert teacher.generation_settings["num_frames"] == 8 and teacher.generation_settings["height"] == 32


def test_teacher_follows_prompts_far_above_an_untrained_model(named_teacher):
    _, teacher = named_teacher
    scenes = sample_scenes(8, seed=4242, two_object_fraction=0.0)
    prompts, seeds = [describe(s) for s in scenes], list(range(8))
    reward = ShapesReward()
    taught = reward.score(teacher.generate(prompts, seeds).videos, prompts)
    untrained = teacher.copy()
    with torch.no_grad():
        for param in untrained.trainable_parameters("all"):
            param.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    random = reward.score(untrained.generate(prompts, seeds).videos, prompts)
    # Measured (8 one-object prompts): text_alignment 0.87 (fast 0.80), dynamic_degree 0.96 (0.90);
    # untrained ≈ 0.1 and 0.1.
    assert taught["text_alignment"].mean() > 0.65
    assert taught["text_alignment"].mean() > random["text_alignment"].mean() + 0.4
    assert taught["dynamic_degree"].mean() > 0.6


def _files(folder: Path) -> dict[str, bytes | dict]:
    """Every file of ``folder`` by relative path: JSON parsed without the writing library's version, else bytes."""
    files: dict[str, bytes | dict] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".json":
            files[str(path.relative_to(folder))] = {
                k: v for k, v in json.loads(path.read_text()).items() if k not in VERSION_KEYS
            }
        else:
            files[str(path.relative_to(folder))] = path.read_bytes()
    return files


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_export_writes_the_shipped_folder_again(name, tmp_path):
    """The training's architecture and export, given a shipped teacher's weights, write that folder file for file."""
    shipped = MODELS / name
    kind = TEACHERS[ARCHITECTURES[name]]
    with torch.random.fork_rng():
        parts = kind.build()
    parts.text_encoder.load_state_dict(load_file(shipped / "text_encoder" / "model.safetensors"))
    parts.vae.load_state_dict(load_file(shipped / "vae" / "diffusion_pytorch_model.safetensors"))
    parts.vae.register_to_config(
        scaling_factor=json.loads((shipped / "vae" / "config.json").read_text())["scaling_factor"]
    )
    parts.denoiser.load_state_dict(load_file(shipped / "unet" / "diffusion_pytorch_model.safetensors"))
    kind.export(tmp_path / name, parts, parts.denoiser)
    assert _files(tmp_path / name) == _files(shipped)


def test_train_teacher_refuses_contradictory_options(tmp_path):
    for options in (["--distill-weight", "1"], ["--export-only"]):
        with pytest.raises(SystemExit):
            train_teacher(["--out", str(tmp_path), *options])


def test_training_resumes_and_exports_a_loadable_teacher(tmp_path):
    """The fast teacher's recipe in miniature: a short call, a resumed call, then the export."""
    first, second, exported = tmp_path / "first", tmp_path / "second", tmp_path / "teacher"
    common = [
        "--videos",
        "8",
        "--batch",
        "2",
        "--eval-count",
        "1",
        "--init-from",
        str(MODELS / "shapes-teacher"),
        "--distill-weight",
        "1",
    ]
    with torch.random.fork_rng():
        train_teacher(["--out", str(first), "--minutes", "0.01", "--unet", "fast", *common])
        train_teacher(["--out", str(second), "--minutes", "0", "--resume", str(first / "checkpoint"), *common])
        train_teacher(["--export-only", "--resume", str(second / "checkpoint"), "--out", str(exported)])
    before, after = read_state(first / "checkpoint"), read_state(second / "checkpoint")
    assert (
        architecture(after) == "fast" and after["step"] == before["step"] >= 1
    )  # no time for a step in the second call
    assert len(after["history"]) == len(before["history"]) + 1  # each call ends with an evaluation
    assert (first / "train_log.jsonl").read_text().count('"phase": "done"') == 1
    teacher = load_plugins().registry("models").get("animatediff").from_options({"base": str(exported)})
    assert teacher.num_parameters() == PARAMETERS["shapes-teacher-fast"]
    vae = "vae/diffusion_pytorch_model.safetensors"  # --init-from keeps the teacher's VAE frozen
    assert (exported / vae).read_bytes() == (MODELS / "shapes-teacher" / vae).read_bytes()
