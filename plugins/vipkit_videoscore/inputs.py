"""VideoScore's inputs as the official scripts build them: frame sampling, query text, image tokens, pixels.

The official pipeline (``TIGER-AI-Lab/VideoScore``, ``benchmark/eval_videoscore.py``) samples frames with
``np.linspace(0, n - 1, max_frames).astype(int)``, formats ``REGRESSION_QUERY_PROMPT`` with the text
prompt, appends ``"<image> "`` once per frame, and runs ``Idefics2Processor`` (no chat template, no
image splitting, 64 tokens per image). The processor expands each ``<image>`` into
``<fake_token_around_image>`` + ``<image>`` x 64 + ``<fake_token_around_image>``, tokenizes with BOS, and
turns each frame into pixels: resized so the longest edge is at most 980 and the shortest at least 378
(bilinear), scaled to [0, 1] and normalised with mean = std = 0.5. Here the same happens in torch, on
frames that are already tensors, so a batch of videos is prepared on the GPU in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

REGRESSION_QUERY_PROMPT = """
Suppose you are an expert in judging and evaluating the quality of AI-generated videos,
please watch the following frames of a given video and see the text prompt for generating the video,
then give scores from 5 different dimensions:
(1) visual quality: the quality of the video in terms of clearness, resolution, brightness, and color
(2) temporal consistency, both the consistency of objects or humans and the smoothness of motion or movements
(3) dynamic degree, the degree of dynamic changes
(4) text-to-video alignment, the alignment between the text prompt and the video content
(5) factual consistency, the consistency of the video content with the common-sense and factual knowledge

for each dimension, output a float number from 1.0 to 4.0,
the higher the number is, the better the video performs in that sub-score, 
the lowest 1.0 means Bad, the highest 4.0 means Perfect/Real (the video is like a real video)
Here is an output example:
visual quality: 3.2
temporal consistency: 2.7
dynamic degree: 4.0
text-to-video alignment: 2.3
factual consistency: 1.8

For this video, the text prompt is "{text_prompt}",
all the frames of video are as follows:
"""
"""The official regression query, character for character (including the trailing space on one line)."""

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"


@dataclass(frozen=True)
class ImageSettings:
    """The Idefics2 image processor's settings (``preprocessor_config.json``) that change the pixels."""

    shortest_edge: int = 378
    longest_edge: int = 980
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def sample_frame_indices(num_frames: int, max_frames: int) -> list[int]:
    """``max_frames`` indices spread over the video as the official benchmark picks them; all frames if fewer."""
    if num_frames <= max_frames:
        return list(range(num_frames))
    return torch.linspace(0, num_frames - 1, max_frames, dtype=torch.float64).long().tolist()


def query_text(prompt: str, num_frames: int) -> str:
    """The regression query for ``prompt`` followed by one ``<image>`` per frame."""
    return REGRESSION_QUERY_PROMPT.format(text_prompt=prompt) + f"{IMAGE_TOKEN} " * num_frames


def expand_image_tokens(text: str, image_seq_len: int) -> str:
    """What ``Idefics2Processor`` feeds the tokenizer: each image as ``image_seq_len`` tokens between fake tokens."""
    expanded = text.replace(IMAGE_TOKEN, f"{FAKE_IMAGE_TOKEN}{IMAGE_TOKEN * image_seq_len}{FAKE_IMAGE_TOKEN}")
    return expanded.replace(FAKE_IMAGE_TOKEN * 2, FAKE_IMAGE_TOKEN)


def resized_size(height: int, width: int, settings: ImageSettings) -> tuple[int, int]:
    """Idefics2's rule: shrink so the longest edge fits ``longest_edge``, then raise each edge to ``shortest_edge``."""
    aspect = width / height
    if width >= height and width > settings.longest_edge:
        width = settings.longest_edge
        height = int(width / aspect)
    elif height > width and height > settings.longest_edge:
        height = settings.longest_edge
        width = int(height * aspect)
    return max(height, settings.shortest_edge), max(width, settings.shortest_edge)


def pixel_values(frames: torch.Tensor, settings: ImageSettings) -> torch.Tensor:
    """Frames ``(N, 3, H, W)`` in [0, 1] → normalised pixels ``(N, 3, H', W')`` float32.

    Frames are first rounded to 8-bit like the video files the official pipeline reads; resizing is
    bilinear with antialiasing (PIL's bilinear filter, which the processor uses, also antialiases).
    """
    frames = (frames.float().clamp(0, 1) * 255).round()
    size = resized_size(frames.shape[-2], frames.shape[-1], settings)
    if size != tuple(frames.shape[-2:]):
        frames = (
            F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)
        )
    mean = torch.tensor(settings.mean, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(settings.std, device=frames.device).view(1, 3, 1, 1)
    return (frames / 255 - mean) / std
