"""A stop (Ctrl-C, SIGTERM) that a library turns into its own error while reading stored pairs is still a stop, never
"damaged pairs, delete the folder" (torch raises ValueError when the KeyboardInterrupt lands inside safetensors)."""

import pytest
import torch

from vipkit import stopping
from vipkit.errors import VipkitError
from vipkit.interfaces import PairSet
from vipkit.pair_store import load_pairs, save_pairs


@pytest.fixture
def damaged_store(tmp_path):
    latents, videos = torch.zeros(1, 4, 2, 4, 4), torch.zeros(1, 2, 3, 4, 4)
    pairs = PairSet(["a"], [0], latents, latents.clone(), videos, videos.clone(), ["x"])
    save_pairs(pairs, tmp_path)
    (tmp_path / "pairs.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}garbage")  # a header that lies
    (tmp_path / "digest.json").unlink(missing_ok=True)
    yield tmp_path
    stopping._requested = False


def test_damaged_pairs_are_named_when_no_stop_was_asked(damaged_store):
    with pytest.raises(VipkitError, match="cannot be read"):
        load_pairs(damaged_store)


def test_the_same_error_during_a_stop_is_the_stop(damaged_store):
    stopping.request_stop()
    with pytest.raises(KeyboardInterrupt):
        load_pairs(damaged_store)
