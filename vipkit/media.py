"""Videos as people and files hold them: 8-bit frames, and GIFs and MP4s to look at what a model makes.

A run keeps every video it generates on the 8-bit grid a saved video has (``eight_bit``): the pair and
teacher stores then hold 1 byte per value instead of 4, and a video read back from them is bit for bit
the one that was scored and trained on.

Samples (``save_samples``) are written twice: a looping GIF that any viewer shows, and an H.264 MP4
(yuv420p, what browsers, players, VBench and VideoScore read) through imageio's ffmpeg plugin and the
ffmpeg binary that imageio-ffmpeg ships. Both play at ``SAMPLE_FPS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

SAMPLE_FPS = 8
"""Frames per second of every sample GIF and MP4. AnimateDiff's own rate (its ``save_videos_grid`` writes 8 fps)
and the rate VBench's ``video_fps`` defaults to. The ``VideoModel`` interface carries no playback rate, so one
constant serves every family; pass ``fps`` to the functions below for another."""

MIN_SIZE = 128
"""Samples whose shorter side is below this many pixels are upscaled (nearest, by a whole factor) to reach it, so a
16-px test video is something to look at; a real model's videos (256 px and up) are written pixel for pixel."""

MP4_CRF = 18
"""libx264's constant rate factor for sample MP4s: 18 is visually near-lossless (0 lossless, 23 libx264's default)."""


class VideoEncoderUnavailable(VipkitError):
    """ffmpeg could not write an MP4: imageio-ffmpeg missing, no usable ffmpeg binary, or ffmpeg failed to run."""


def to_uint8(videos: Tensor) -> Tensor:
    """Videos in [0, 1] as uint8 values 0..255 (rounded to nearest)."""
    import torch

    return (videos.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def from_uint8(videos: Tensor) -> Tensor:
    """uint8 videos back to float32 in [0, 1]; ``from_uint8(to_uint8(x))`` is ``eight_bit(x)``."""
    import torch

    return videos.to(torch.float32) / 255


def eight_bit(videos: Tensor) -> Tensor:
    """Float videos rounded to the 8-bit grid: what storing them as uint8 and reading them back gives."""
    return from_uint8(to_uint8(videos))


def grid(videos: Tensor) -> Tensor:
    """Several videos ``(B, F, C, H, W)`` side by side, left to right, as one video ``(F, C, H, B * W)``."""
    import torch

    return torch.cat(list(videos), dim=-1)


def _frames(video: Tensor, min_size: int) -> np.ndarray:
    """``(F, C, H, W)`` in [0, 1] → uint8 ``(F, H', W', C)``, upscaled by the whole factor reaching ``min_size``."""
    frames = to_uint8(video).permute(0, 2, 3, 1).cpu().numpy()
    scale = max(1, -(-min_size // min(frames.shape[1:3])))
    return frames.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest: each pixel becomes a scale × scale block


def save_gif(video: Tensor, path: Path, fps: int = SAMPLE_FPS, min_size: int = MIN_SIZE) -> None:
    """Write one video ``(F, C, H, W)`` in [0, 1] as a looping GIF, upscaled (nearest) to ``min_size`` px."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in _frames(video, min_size)]
    # GIF delays are whole centiseconds: each frame ends at its own time rounded, so 8 fps is 120, 130, 130, 120 ms...
    ends = [round(100 * i / fps) for i in range(len(images) + 1)]
    durations = [10 * (end - start) for start, end in zip(ends, ends[1:], strict=False)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def save_gif_grid(videos: Tensor, path: Path, fps: int = SAMPLE_FPS, min_size: int = MIN_SIZE) -> None:
    """Several videos ``(B, F, C, H, W)`` side by side in one GIF."""
    save_gif(grid(videos), path, fps, min_size)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _head(path: Path, size: int = 8) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def save_mp4(video: Tensor, path: Path, fps: int = SAMPLE_FPS, min_size: int = MIN_SIZE) -> None:
    """Write one RGB video ``(F, 3, H, W)`` in [0, 1] as an H.264 MP4 (libx264, yuv420p, CRF ``MP4_CRF``).

    Size: the whole-factor nearest upscale of ``save_gif`` (only below ``min_size``), then one copied edge
    row/column where a side is odd, since yuv420p needs even sizes. Nothing is ever resampled: imageio's
    ``macro_block_size`` (default 16: rescale to multiples of 16) is set to 1, and H.264 itself pads to its
    16-px blocks and crops them away on decoding. Colours: converted with the BT.601 matrix, limited range,
    which decoders that ignore colour tags (decord, OpenCV, older ffmpeg) assume, and tagged so for players
    and browsers that read tags (matrix BT.601, primaries BT.709 and transfer sRGB: what generated frames are).

    The file appears whole or not at all (written beside it, then renamed). Raises ``VideoEncoderUnavailable``
    when ffmpeg cannot be found or run or writes no MP4.
    """
    import numpy as np

    frames = _frames(video, min_size)
    if frames.shape[-1] != 3:
        raise ValueError(f"save_mp4 writes RGB videos (F, 3, H, W); got {frames.shape[-1]} channels")
    odd = ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
    frames = np.ascontiguousarray(np.pad(frames, odd, mode="edge"))
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()  # RuntimeError when there is no ffmpeg binary at all
    except (ImportError, RuntimeError) as exc:
        raise VideoEncoderUnavailable(f"cannot write {path.name}: no ffmpeg ({_first_line(exc)})") from exc
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")  # ffmpeg picks the container from the suffix
    try:
        try:
            imageio.mimwrite(
                tmp,
                list(frames),
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=1,
                quality=None,  # no imageio quality mapping: the CRF below decides
                ffmpeg_log_level="error",
                output_params=[
                    *("-crf", str(MP4_CRF)),
                    *("-vf", "setparams=color_primaries=bt709:color_trc=iec61966-2-1"),
                    *("-colorspace", "smpte170m", "-color_range", "tv"),
                    *("-movflags", "+faststart"),  # index first: browsers start playing before the end arrives
                ],
            )
        except OSError as exc:  # ffmpeg did not start, or died while taking frames
            raise VideoEncoderUnavailable(f"cannot write {path.name}: ffmpeg failed ({_first_line(exc)})") from exc
        # imageio-ffmpeg does not check ffmpeg's exit status: a failing ffmpeg shows up as a missing or foreign file
        if not tmp.exists() or _head(tmp)[4:8] != b"ftyp":
            raise VideoEncoderUnavailable(f"cannot write {path.name}: ffmpeg exited without writing an MP4")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_samples(
    videos: Tensor,
    stem: Path,
    fps: int = SAMPLE_FPS,
    min_size: int = MIN_SIZE,
    warn: Callable[[str], None] | None = None,
) -> list[Path]:
    """Several videos ``(B, F, C, H, W)`` side by side as ``stem.gif`` and ``stem.mp4``; returns the paths written.

    The GIF is written first and always. When ffmpeg cannot write the MP4 (``VideoEncoderUnavailable``) the MP4
    is skipped with one line to ``warn`` (default: ``warnings.warn``); every other error propagates.
    """
    gif, mp4 = stem.with_name(stem.name + ".gif"), stem.with_name(stem.name + ".mp4")
    video = grid(videos)
    save_gif(video, gif, fps, min_size)
    try:
        save_mp4(video, mp4, fps, min_size)
    except VideoEncoderUnavailable as exc:
        message = f"warning: {exc}; only {gif.name} was written"
        if warn is None:
            import warnings

            warnings.warn(message, RuntimeWarning, stacklevel=2)
        else:
            warn(message)
        return [gif]
    return [gif, mp4]
