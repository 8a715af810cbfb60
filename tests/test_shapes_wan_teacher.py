"""The Wan teacher's training (``train_teacher --architecture wan``): it learns what the ``wan`` family distils with
(same conditioning, forward process, target and prediction), resumes exactly, and exports a folder the family and
plain diffusers load."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import WanPipeline
from safetensors.torch import load_file

from vipkit_shapes.teacher_architectures import TEACHERS
from vipkit_shapes.teacher_checkpoint import exported_parts, read_state
from vipkit_shapes.teacher_data import tokenize, world_prompts
from vipkit_shapes.train_teacher import main as train_teacher
from vipkit_wan import Wan

KIND = TEACHERS["wan"]
PARAMETERS = 1_601_440  # WanTransformer3DModel: 12 blocks of 125,152 and the patch embedding and head
PROMPTS = world_prompts(2, seed=7)
VAE_CONFIG = '{"base_dim": 8}'  # the default is 16


def test_conditioning_is_the_pipelines_exactly():
    parts = KIND.build()
    pipe = KIND.pipeline(parts, parts.denoiser)
    prompts = [*PROMPTS, ""]  # one- or two-object scenes and the empty prompt of guidance
    with torch.no_grad():
        expected = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=24)[0]
        mine = KIND.condition(parts.text_encoder, tokenize(parts.tokenizer, prompts))
    assert torch.equal(mine, expected)
    assert mine[-1, 2:].abs().sum() == 0 and mine[-1, :2].abs().sum() > 0  # "" is 2 tokens, the rest zeroed


def test_denoiser_and_text_encoder_fit_a_fixed_batch():
    parts = KIND.build()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 5, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([250, 750])
    noisy, target = KIND.forward_process(parts.scheduler, torch.device("cpu"))(x0, noise, t)
    assert torch.allclose(noisy, torch.stack([0.75 * x0[0] + 0.25 * noise[0], 0.25 * x0[1] + 0.75 * noise[1]]))
    assert torch.equal(target, noise - x0)
    tokens = tokenize(parts.tokenizer, PROMPTS)
    params = [*parts.denoiser.parameters(), *parts.text_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    losses = []
    for _ in range(30):
        prediction = KIND.predict(parts.denoiser, noisy, t, KIND.condition(parts.text_encoder, tokens))
        loss = F.mse_loss(prediction, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Measured: 2.37 -> 1.29 (the velocity of unit-variance latents and noise has E|n - x|^2 = 2), falling every step.
    assert 1.9 < losses[0] < 2.8 and losses[-1] < 0.6 * losses[0]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False))
    assert parts.text_encoder.shared.weight.grad.abs().sum() > 0  # the prompt's gradient reaches the text encoder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short call (a narrower VAE than the default), a resumed call without time for a step, and the export of the
    second checkpoint."""
    root = tmp_path_factory.mktemp("wan_teacher")
    first, second, exported = root / "first", root / "second", root / "teacher"
    common = ["--videos", "4", "--batch", "2", "--eval-count", "1", "--vae-steps", "2", "--vae-batch", "1"]
    with torch.random.fork_rng():
        first_call = ["--out", str(first), "--minutes", "0.03", "--architecture", "wan", "--vae-config", VAE_CONFIG]
        train_teacher([*first_call, *common])
        train_teacher(["--out", str(second), "--minutes", "0", "--resume", str(first / "checkpoint"), *common])
        train_teacher(["--export-only", "--resume", str(second / "checkpoint"), "--out", str(exported)])
    return first / "checkpoint", second / "checkpoint", exported


def test_resume_restores_weights_ema_and_optimizer_exactly(trained):
    first, second, _ = trained
    before, after = read_state(first), read_state(second)
    assert after["architecture"] == "wan" and after["step"] == before["step"] >= 1
    assert len(after["history"]) == len(before["history"]) + 1  # each call ends with an evaluation
    assert after["latent_scale"] == before["latent_scale"] and len(after["latent_scale"]["latents_std"]) == 16
    assert before["vae_config"]["base_dim"] == after["vae_config"]["base_dim"] == 8  # the resumed call keeps it
    names = ["transformer", "ema_transformer", "text_encoder", "vae", "optimizer"]
    assert sorted(p.stem for p in first.glob("*.safetensors")) == sorted(names)
    for name in names:
        saved, resumed = load_file(first / f"{name}.safetensors"), load_file(second / f"{name}.safetensors")
        assert saved.keys() == resumed.keys() and all(torch.equal(saved[k], resumed[k]) for k in saved), name
    moments = load_file(first / "optimizer.safetensors")
    assert any(v.abs().sum() > 0 for k, v in moments.items() if k.endswith("exp_avg"))  # a step was taken
    first_log, second_log = ([json.loads(line) for line in (c.parent / "train_log.jsonl").open()] for c in trained[:2])
    checks = [record for record in first_log + second_log if record["phase"] == "vae_check"]
    assert len(checks) == 1 and checks[0] in first_log  # only the fresh call trains the VAE, and checks it
    assert checks[0]["mse"] > 0 and checks[0]["mean_colour_mse"] > 0


def test_export_loads_in_the_wan_family_as_trained(trained):
    """The family's noising, target and prediction on the exported folder are the training's, on the EMA weights."""
    _, checkpoint, exported = trained
    model = Wan.from_options({"base": str(exported)})
    assert model.num_parameters() == PARAMETERS
    assert sum(block.kind == "transformer_block" for block in model.blocks()) == 12
    assert model.generation_settings == {**KIND.settings}
    assert json.loads((exported / "vipkit_dit.json").read_text())["generation_settings"]["num_frames"] == 9
    _, parts = exported_parts(checkpoint)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 16, 5, 8, 8, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([100, 900])
    noisy, target = KIND.forward_process(parts.scheduler, torch.device("cpu"))(x0, noise, t)
    assert torch.allclose(model.add_noise(x0, noise, t), noisy, atol=1e-6)
    assert torch.equal(model.training_target(x0, noise, t), target)
    with torch.no_grad():
        trained_prediction = KIND.predict(
            parts.denoiser, noisy, t, KIND.condition(parts.text_encoder, tokenize(parts.tokenizer, PROMPTS))
        )
    family_prediction = model.predict_noise(noisy, t, model.encode_prompts(PROMPTS))
    assert torch.allclose(family_prediction, trained_prediction, atol=1e-5)
    videos = model.generate(PROMPTS[:1], [0]).videos
    assert videos.shape == (1, 9, 3, 32, 32)
    plain = WanPipeline.from_pretrained(exported, use_safetensors=True)  # plain diffusers reads the same folder
    assert plain.transformer.config.num_layers == 12 and plain.vae.config.scale_factor_temporal == 2
    assert plain.vae.config.base_dim == json.loads((exported / "vae" / "config.json").read_text())["base_dim"] == 8


def test_an_exported_teacher_trains_further_from_its_own_weights(trained, tmp_path):
    """``--init-from T --init-denoiser``: the new call starts from T's VAE (with its latent scale), text encoder and
    transformer, where a plain ``--init-from`` starts the transformer afresh."""
    _, _, exported = trained
    common = ["--minutes", "0", "--videos", "4", "--batch", "2", "--eval-count", "1", "--init-from", str(exported)]
    common += ["--architecture", "wan"]
    with torch.random.fork_rng():
        train_teacher(["--out", str(tmp_path / "further"), "--init-denoiser", *common])
        train_teacher(["--out", str(tmp_path / "afresh"), *common])
    given = load_file(exported / "transformer" / "diffusion_pytorch_model.safetensors")
    further = load_file(tmp_path / "further" / "checkpoint" / "transformer.safetensors")
    afresh = load_file(tmp_path / "afresh" / "checkpoint" / "transformer.safetensors")
    assert further.keys() == given.keys() and all(torch.equal(further[k], given[k].float()) for k in given)
    assert not all(torch.equal(afresh[k], given[k].float()) for k in given)
    state = read_state(tmp_path / "further" / "checkpoint")
    config = json.loads((exported / "vae" / "config.json").read_text())
    assert state["latent_scale"] == {key: config[key] for key in ("latents_mean", "latents_std")}  # kept, not refitted
    # no teacher to start from; not an AnimateDiff teacher; not a teacher folder
    for bad in (["--init-denoiser"], ["--init-from", str(exported)], ["--init-from", str(tmp_path)]):
        with pytest.raises(SystemExit):
            train_teacher(["--out", str(tmp_path / "bad"), *bad])
