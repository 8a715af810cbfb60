"""The ``videoscore`` reward on a tiny random VideoScore built offline (same architecture and names, toy sizes)."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import Idefics2ImageProcessorPil, Idefics2Processor

from vipkit.errors import VipkitError
from vipkit.plugins import load_plugins
from vipkit.testing import check_reward
from vipkit_videoscore.inputs import ImageSettings, expand_image_tokens, pixel_values, query_text, sample_frame_indices
from vipkit_videoscore.reward import DIMENSIONS, VideoScoreReward, load_videoscore
from vipkit_videoscore.tiny import TINY_IMAGE_SETTINGS, save_tiny_videoscore, tiny_tokenizer, tiny_videoscore

PROMPTS = ["a cat", "a red square moving left on a blue background", "fireworks over a harbour at night, slow motion"]
TINY = {"preset": "tiny", "device": "cpu"}


def official_keys(vision_layers: int, perceiver_layers: int, text_layers: int) -> set[str]:
    """Parameter names of Mantis' ``Idefics2ForSequenceClassification`` (the class VideoScore was saved from):
    ``model`` = Idefics2Model (SigLIP ``vision_model``, ``connector`` = projection MLP + perceiver,
    Mistral ``text_model``) and ``score`` = nn.Linear(hidden, 5) with its default bias."""
    keys = {
        "model.vision_model.embeddings.patch_embedding.weight",
        "model.vision_model.embeddings.patch_embedding.bias",
        "model.vision_model.embeddings.position_embedding.weight",
        "model.vision_model.post_layernorm.weight",
        "model.vision_model.post_layernorm.bias",
        "model.connector.modality_projection.gate_proj.weight",
        "model.connector.modality_projection.up_proj.weight",
        "model.connector.modality_projection.down_proj.weight",
        "model.connector.perceiver_resampler.latents",
        "model.connector.perceiver_resampler.norm.weight",
        "model.text_model.embed_tokens.weight",
        "model.text_model.norm.weight",
        "score.weight",
        "score.bias",
    }
    for i in range(vision_layers):
        prefix = f"model.vision_model.encoder.layers.{i}"
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
            "layer_norm1",
            "layer_norm2",
        ):
            keys |= {f"{prefix}.{name}.weight", f"{prefix}.{name}.bias"}
    for i in range(perceiver_layers):
        prefix = f"model.connector.perceiver_resampler.layers.{i}"
        for name in (
            "input_latents_norm",
            "input_context_norm",
            "post_attention_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ):
            keys.add(f"{prefix}.{name}.weight")
    for i in range(text_layers):
        prefix = f"model.text_model.layers.{i}"
        for name in (
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ):
            keys.add(f"{prefix}.{name}.weight")
    return keys


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_videoscore(tmp_path_factory.mktemp("videoscore"))


@pytest.fixture(scope="module")
def tiny_reward() -> VideoScoreReward:
    return VideoScoreReward.from_options(TINY)


def random_videos(batch: int, frames: int = 6, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_registered_under_its_name() -> None:
    assert load_plugins().registry("rewards").get("videoscore") is VideoScoreReward


def test_keeps_the_reward_contract() -> None:
    scores = check_reward(VideoScoreReward, TINY)
    assert tuple(scores) == DIMENSIONS


def test_state_dict_follows_the_official_checkpoint_layout(saved_dir: Path) -> None:
    model, _ = tiny_videoscore()
    assert set(model.state_dict()) == official_keys(vision_layers=2, perceiver_layers=1, text_layers=2)
    assert model.score.weight.shape == (5, 32) and model.score.bias.shape == (5,)
    with safe_open(str(saved_dir / "model.safetensors"), "pt") as file:  # what lands on disk is the same layout
        assert set(file.keys()) == official_keys(2, 1, 2)


def test_random_preset_is_the_full_size_idefics2_8b_architecture() -> None:
    """Built by the reward's own loading path on the meta device: VideoScore's real sizes, nothing allocated."""
    assert VideoScoreReward.Config(preset="random").preset == "random"
    loaded = load_videoscore("unused", "meta", "bfloat16", preset="random")
    model = loaded.model
    assert {p.device.type for p in model.parameters()} == {"meta"} and {p.dtype for p in model.parameters()} == {
        torch.bfloat16
    }
    assert loaded.image_settings == ImageSettings(shortest_edge=378, longest_edge=980)
    assert set(model.state_dict()) == official_keys(vision_layers=27, perceiver_layers=3, text_layers=32)
    assert model.score.weight.shape == (5, 4096)
    assert model.model.text_model.embed_tokens.weight.shape == (32003, 4096)
    # Mistral-7B-v0.1 has 7,241,732,096 parameters: less its 32000-token lm_head, plus 3 added token embeddings
    assert sum(p.numel() for p in model.model.text_model.parameters()) == 7_241_732_096 - 32000 * 4096 + 3 * 4096
    total = sum(p.numel() for p in model.parameters())
    assert 8.4e9 < total + 32003 * 4096 < 8.41e9  # Idefics2-8B ("8.4B", counted with its lm_head)
    assert total == 8_271_704_309  # as measured on the H200 (benchmarks/RESULTS.md)
    # the word-level tokenizer gives the model's image token, 64 per frame, and Idefics2's other special ids
    tokenizer = loaded.tokenizer
    assert len(tokenizer) == model.config.text_config.vocab_size == 32003
    assert tokenizer.convert_tokens_to_ids(["<fake_token_around_image>", "<image>", "<end_of_utterance>"]) == [
        32000,
        32001,
        32002,
    ]
    ids = tokenizer(expand_image_tokens(query_text("a cat on a skateboard", 3), loaded.image_seq_len))["input_ids"]
    assert ids.count(model.config.image_token_id) == 3 * 64 and ids[0] == tokenizer.bos_token_id == 1
    assert ids.count(tokenizer.unk_token_id) == 3  # "cat", "on" and "skateboard" are not words of the query


def test_inputs_equal_the_transformers_idefics2_processor_and_the_score_reads_the_last_token(
    tiny_reward: VideoScoreReward,
) -> None:
    video, prompt = random_videos(1, frames=3, seed=1), "a dog on a skateboard"
    loaded = tiny_reward.videoscore
    settings = TINY_IMAGE_SETTINGS
    processor = Idefics2Processor(
        image_processor=Idefics2ImageProcessorPil(
            size={"shortest_edge": settings.shortest_edge, "longest_edge": settings.longest_edge},
            do_image_splitting=False,
        ),
        tokenizer=tiny_tokenizer(),
        image_seq_len=loaded.image_seq_len,
    )
    images = [Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()) for frame in video[0]]
    official = processor(text=query_text(prompt, 3), images=images, return_tensors="pt")

    ours = tiny_reward._inputs(video, [prompt])
    torch.testing.assert_close(ours["input_ids"], official["input_ids"], rtol=0, atol=0)
    torch.testing.assert_close(ours["pixel_values"], official["pixel_values"].float(), rtol=0, atol=1e-6)
    with torch.no_grad():
        hidden = loaded.model.model(
            input_ids=official["input_ids"],
            attention_mask=official["attention_mask"],
            pixel_values=official["pixel_values"],
        ).last_hidden_state
        expected = loaded.model.score(hidden[0, -1])
    torch.testing.assert_close(tiny_reward.score_raw(video, [prompt])[0], expected, rtol=0, atol=1e-5)


def test_upscaled_frames_match_the_processor_within_one_level() -> None:
    frames = random_videos(1, frames=2, height=20, width=40, seed=2)[0]
    processor = Idefics2ImageProcessorPil(size={"shortest_edge": 28, "longest_edge": 56}, do_image_splitting=False)
    images = [Image.fromarray((frame.permute(1, 2, 0) * 255).round().byte().numpy()) for frame in frames]
    official = processor(images, return_tensors="pt")["pixel_values"][0]
    ours = pixel_values(frames, TINY_IMAGE_SETTINGS)
    assert ours.shape == official.shape == (2, 3, 28, 40)  # each edge raised to 28 on its own (aspect not kept)
    assert (ours - official).abs().mean() < 2 / 255 * 2  # PIL vs torch bilinear: about a level on average


def test_image_tokens_expand_like_the_processor() -> None:
    text = expand_image_tokens("x <image> <image><image>", 2)
    assert text == (
        "x <fake_token_around_image><image><image><fake_token_around_image> "
        "<fake_token_around_image><image><image><fake_token_around_image><image><image><fake_token_around_image>"
    )


def test_frames_are_sampled_like_the_official_benchmark() -> None:
    # np.linspace(0, 23, 16).astype(int)
    assert sample_frame_indices(24, 16) == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 23]
    assert sample_frame_indices(16, 16) == list(range(16))
    assert sample_frame_indices(5, 16) == [0, 1, 2, 3, 4]


def test_scores_come_out_per_dimension_and_unit_is_the_raw_scale_mapped(tiny_reward: VideoScoreReward) -> None:
    videos = random_videos(3, seed=3)
    raw = tiny_reward.score_raw(videos, PROMPTS)
    assert raw.shape == (3, 5) and raw.dtype == torch.float32
    unit = tiny_reward.score(videos, PROMPTS)
    assert tuple(unit) == DIMENSIONS
    for index, dim in enumerate(DIMENSIONS):
        torch.testing.assert_close(unit[dim], (raw[:, index] - 1) / 3, rtol=0, atol=1e-7)
    raw_scale = VideoScoreReward.from_options({**TINY, "scale": "raw"}).score(videos, PROMPTS)
    torch.testing.assert_close(torch.stack([raw_scale[d] for d in DIMENSIONS], dim=1), raw, rtol=0, atol=1e-6)


def test_batching_gives_the_same_scores_as_one_by_one(tiny_reward: VideoScoreReward) -> None:
    videos = random_videos(3, seed=4)  # prompts of different lengths: rows are padded in a batch
    together = VideoScoreReward.from_options({**TINY, "batch_size": 3}).score_raw(videos, PROMPTS)
    alone = torch.cat([tiny_reward.score_raw(videos[i : i + 1], PROMPTS[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    assert (together[:, 0].max() - together[:, 0].min()) > 1e-4  # the videos really score differently


def test_frames_option_scores_evenly_spaced_frames(tiny_reward: VideoScoreReward) -> None:
    videos = random_videos(1, frames=24, seed=5)
    sampled = VideoScoreReward.from_options({**TINY, "frames": 16}).score_raw(videos, PROMPTS[:1])
    chosen = tiny_reward.score_raw(videos[:, sample_frame_indices(24, 16)], PROMPTS[:1])
    torch.testing.assert_close(sampled, chosen, rtol=0, atol=0)


def test_a_saved_checkpoint_loads_by_path_and_scores_like_the_preset(
    saved_dir: Path, tiny_reward: VideoScoreReward
) -> None:
    videos = random_videos(2, seed=6)
    from_disk = VideoScoreReward.from_options({"model": str(saved_dir), "device": "cpu"})
    torch.testing.assert_close(
        from_disk.score_raw(videos, PROMPTS[:2]), tiny_reward.score_raw(videos, PROMPTS[:2]), rtol=0, atol=1e-6
    )
    assert from_disk.videoscore.image_settings == TINY_IMAGE_SETTINGS


def test_bfloat16_scores_close_to_float32(tiny_reward: VideoScoreReward) -> None:
    videos = random_videos(2, seed=7)
    half = VideoScoreReward.from_options({**TINY, "dtype": "bfloat16"})
    assert half.videoscore.model.score.weight.dtype == torch.bfloat16
    torch.testing.assert_close(
        half.score_raw(videos, PROMPTS[:2]), tiny_reward.score_raw(videos, PROMPTS[:2]), rtol=0, atol=0.1
    )


def test_a_missing_model_directory_is_a_user_error_when_the_reward_is_built(tmp_path: Path) -> None:
    with pytest.raises(VipkitError, match=r"`model`.*nothing_here.*is not a directory"):
        VideoScoreReward.from_options({"model": str(tmp_path / "nothing_here"), "device": "cpu"})


def test_an_unreachable_hub_id_says_how_to_download_when_the_reward_is_built() -> None:
    with pytest.raises(
        VipkitError,
        match=r"HF_HUB_OFFLINE is set.*`hf download TIGER-Lab/VideoScore-v1.1 --local-dir "
        r"models/VideoScore-v1.1` and set reward option `model` to 'models/VideoScore-v1.1'",
    ):
        VideoScoreReward.from_options({"device": "cpu"})  # HF_HUB_OFFLINE=1 in the tests


@pytest.mark.parametrize(
    "options",
    [
        {"frames": 0},
        {"frames": 49},
        {"scale": "percent"},
        {"dtype": "int8"},
        {"device": "gpu"},
        {"batch": 2},
        {"preset": "8b"},
    ],
)
def test_rejects_bad_options(options: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        VideoScoreReward.Config.model_validate(options)


def test_a_directory_holding_another_model_is_a_user_error(tmp_path: Path) -> None:
    from vipkit_clip.tiny import save_tiny_clip

    reward = VideoScoreReward.from_options({"model": str(save_tiny_clip(tmp_path / "clip")), "device": "cpu"})
    with pytest.raises(VipkitError, match=r"`model`.*could not load a VideoScore model"):
        reward.score(random_videos(1), PROMPTS[:1])
