"""Weight files: safetensors only, checked before they are loaded, with digests for what vipkit wrote.

A truncated or corrupted weight file must stop a run with its name and what to do, never load as
garbage nor crash deep inside a loader. Pickle formats (``.bin``, ``.pt``, ``.ckpt``) can run code
when loaded, so vipkit refuses them outright instead of falling back to them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from vipkit.errors import VipkitError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


class CorruptWeightsError(VipkitError):
    """A weight file that is truncated, altered or not safetensors at all."""


def check_safetensors(path: Path) -> None:
    """Read the header of one safetensors file and check the file holds every byte it announces.

    Cheap (the tensors are not read): catches truncated copies, empty files and non-safetensors files.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CorruptWeightsError(f"{path} is not a safetensors file: only {size} bytes")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise CorruptWeightsError(
                f"{path} is truncated or not a safetensors file: its header claims {header_len} bytes, the file has {size}"
            )
        try:
            header = json.loads(f.read(header_len))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            raise CorruptWeightsError(
                f"{path} is corrupt: its safetensors header is not valid JSON with tensor offsets"
            ) from None
    if 8 + header_len + end != size:
        raise CorruptWeightsError(
            f"{path} is truncated or corrupt: its header announces {8 + header_len + end} bytes, the file has {size}"
        )


def check_weight_folder(folder: Path) -> None:
    """Every safetensors file under ``folder`` is whole; a folder with pickle weights and no safetensors is refused."""
    safetensors = sorted(folder.rglob("*.safetensors"))
    pickles = sorted(p for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles and not safetensors:
        names = ", ".join(str(p.relative_to(folder)) for p in pickles[:3]) + (" ..." if len(pickles) > 3 else "")
        raise CorruptWeightsError(
            f"{folder} holds only pickle weights ({names}); vipkit loads safetensors only, because unpickling "
            "can run arbitrary code. Convert them once in a trusted environment (load, then save_pretrained with "
            "safe_serialization=True) or download the .safetensors variant."
        )
    for path in safetensors:
        check_safetensors(path)


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (what a saved model's manifest records)."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_digests(folder: Path, expected: dict[str, str]) -> None:
    """Raise ``CorruptWeightsError`` naming the first file that is missing or differs from its digest."""
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise CorruptWeightsError(f"{path} is missing (the model folder was written with it)")
        if file_sha256(path) != digest:
            raise CorruptWeightsError(f"{path} is corrupt: its content changed since it was written (sha256 differs)")


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 4 MiB chunks (weights can be larger than memory wants)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
