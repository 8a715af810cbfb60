"""Sample videos: MP4s that read back as the frames written (count, size, colour), GIFs beside them, and no
failed run when ffmpeg cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from vipkit.media import MIN_SIZE, SAMPLE_FPS, save_mp4, save_samples

COLOURS = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [0.8, 0.5, 0.2]])
TOLERANCE = 8 / 255  # H.264 is lossy: a solid colour's mean comes back within this, in [0, 1]


def solid_frames(height: int, width: int) -> torch.Tensor:
    """One frame per colour of COLOURS: (F, 3, H, W) in [0, 1]."""
    return COLOURS[:, :, None, None].expand(-1, -1, height, width).clone()


def read_mp4(path: Path) -> tuple[np.ndarray, dict]:
    """Every frame (F, H, W, 3) uint8 and the metadata, through imageio's ffmpeg reader."""
    with imageio.get_reader(path, "ffmpeg") as reader:
        return np.stack([frame for frame in reader.iter_data()]), reader.get_meta_data()


def test_mp4_reads_back_every_frame_at_its_size_and_colour(tmp_path):
    path = tmp_path / "solid.mp4"
    save_mp4(solid_frames(16, 24), path)
    assert path.read_bytes()[4:8] == b"ftyp"  # an ISO MP4: the first box is 'ftyp'
    frames, meta = read_mp4(path)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p") and meta["fps"] == SAMPLE_FPS
    # 16 px < MIN_SIZE: upscaled by the whole factor 8 (nearest), as the GIF is
    assert frames.shape == (len(COLOURS), 16 * 8, 24 * 8, 3) and MIN_SIZE == 128
    means = frames.reshape(len(frames), -1, 3).mean(axis=1) / 255
    assert np.abs(means - COLOURS.numpy()).max() < TOLERANCE


def test_odd_sizes_get_one_copied_edge_and_are_never_resampled(tmp_path):
    height, width = 131, 133  # above MIN_SIZE: written pixel for pixel, then padded to even
    video = torch.zeros(5, 3, height, width)
    for frame in range(5):
        video[frame, :, :, 20 * frame + 10 : 20 * frame + 18] = 1  # a white bar 8 px wide moving right
    path = tmp_path / "bar.mp4"
    save_mp4(video, path)
    frames, _ = read_mp4(path)
    assert frames.shape == (5, height + 1, width + 1, 3)
    columns = frames.mean(axis=(1, 3))  # brightness per column, per frame
    for frame in range(5):
        bright = np.flatnonzero(columns[frame] > 128)
        assert (bright.min(), bright.max()) == (20 * frame + 10, 20 * frame + 17)
    assert np.abs(frames[:, :, -1].astype(int) - frames[:, :, -2]).max() < 24  # the padding copies the edge


def test_save_samples_writes_the_same_grid_as_gif_and_mp4(tmp_path):
    videos = torch.stack([solid_frames(16, 16)[:4], solid_frames(16, 16)[2:]])  # (2, 4, 3, 16, 16)
    written = save_samples(videos, tmp_path / "stage-001-pruned")
    assert written == [tmp_path / "stage-001-pruned.gif", tmp_path / "stage-001-pruned.mp4"]
    frames, _ = read_mp4(written[1])
    with Image.open(written[0]) as gif:
        assert (gif.n_frames, gif.size) == (4, (256, 128))
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert sum(durations) == 4 * 1000 / SAMPLE_FPS  # centisecond delays that add up to the MP4's frame rate
    assert frames.shape == (4, 128, 256, 3)  # the videos side by side, left to right
    left, right = frames[:, :, :128].mean(axis=(1, 2)) / 255, frames[:, :, 128:].mean(axis=(1, 2)) / 255
    assert np.abs(left - COLOURS[:4].numpy()).max() < TOLERANCE
    assert np.abs(right - COLOURS[2:].numpy()).max() < TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage-001-pruned.gif", "stage-001-pruned.mp4"]


def test_mp4_refuses_videos_that_are_not_rgb(tmp_path):
    with pytest.raises(ValueError, match="3, H, W"):
        save_mp4(torch.zeros(2, 4, 16, 16), tmp_path / "rgba.mp4")


FAKE_FFMPEG = {
    "missing": None,
    "failing": "#!/bin/sh\necho 'fake ffmpeg: cannot encode' >&2\nexit 1\n",
    "silent": "#!/bin/sh\ncat > /dev/null\n",  # takes every frame, exits 0, writes nothing
}


@pytest.mark.parametrize("kind", list(FAKE_FFMPEG))
def test_without_a_working_ffmpeg_the_gif_is_written_and_one_warning_logged(tmp_path, kind):
    exe = tmp_path / "ffmpeg"
    if FAKE_FFMPEG[kind] is not None:
        exe.write_text(FAKE_FFMPEG[kind])
        exe.chmod(0o755)
    out = tmp_path / "samples"
    out.mkdir()
    code = (
        "import sys, torch; from vipkit.media import save_samples\n"
        "written = save_samples(torch.rand(2, 3, 3, 16, 16), __import__('pathlib').Path(sys.argv[1]) / 'teacher',"
        " warn=print)\nprint('written', *(p.name for p in written))\n"
    )
    # a fresh process: imageio-ffmpeg reads IMAGEIO_FFMPEG_EXE once and caches it
    result = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "IMAGEIO_FFMPEG_EXE": str(exe), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[1] == "written teacher.gif", result.stdout
    assert lines[0].startswith("warning: cannot write teacher.mp4: ") and lines[0].endswith(
        "only teacher.gif was written"
    )
    assert sorted(p.name for p in out.iterdir()) == ["teacher.gif"]  # no MP4, whole or partial
