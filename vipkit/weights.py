"""Weight files: safetensors only, checked before they are loaded, with digests for what vipkit wrote.

A truncated or corrupted weight file must stop a run with its name and what to do, never load as
garbage nor crash deep inside a loader. Pickle formats (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``)
can run code when loaded, so vipkit never unpickles them while loading a model: a folder vipkit wrote
(a saved model, an export) holding one is refused; a downloaded folder (the hub layout, where
``pytorch_model.bin`` often sits beside ``model.safetensors``) is loaded with ``use_safetensors=True``, so
the pickle file is never opened, and refused when it has no safetensors at all. A manifest's file list
(``vipkit_model.json``, ``vipkit_export.json``) names files inside its folder only.

Two official weights exist only as pickles (VBench's aesthetic head and torchvision's RAFT, both ``.pth``
state dicts): ``load_official_state`` reads such a file once with torch's restricted unpickler
(``weights_only=True``: tensors and plain containers only, no code) and keeps a safetensors copy beside it,
which every later load reads instead. Saved configs carry no machine paths (``scrub_source_paths``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from vipkit.errors import VipkitError

if TYPE_CHECKING:
    from torch import Tensor

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
SOURCE_PATH_KEYS = ("_name_or_path", "name_or_path")
"""Config keys where diffusers and transformers record the folder a model was loaded from."""
LOAD_FLAG_KEYS = ("is_local", "local_files_only")
"""Top-level ``tokenizer_config.json`` keys where transformers records how a tokenizer was loaded (from a folder)."""
BACKEND_STATE_KEYS = (
    "max_length",
    "truncation_side",
    "stride",
    "truncation_strategy",
    "pad_token_type_id",
    "padding_side",
    "pad_to_multiple_of",
)
"""Init options a transformers fast tokenizer derives, on loading, from the padding / truncation state its
``tokenizer.json`` holds (which a used tokenizer's save records, and which is saved again with it)."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CorruptWeightsError(VipkitError):
    """A weight file that is truncated, altered or not safetensors at all."""


class UnsafeWeightsError(VipkitError):
    """A pickle file where vipkit loads a model, or a manifest naming a file outside its folder."""


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


def pickle_files(folder: Path) -> list[Path]:
    """The files under ``folder`` whose suffix is a pickle format's, sorted (found by name: none is opened)."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file())


def _names(folder: Path, paths: list[Path]) -> str:
    return ", ".join(str(p.relative_to(folder)) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")


def refuse_pickle_files(folder: Path) -> None:
    """Refuse a folder vipkit wrote (a saved model, an export) that holds a pickle file: vipkit never writes one."""
    pickles = pickle_files(folder)
    if pickles:
        raise UnsafeWeightsError(
            f"{folder} holds a pickle file ({_names(folder, pickles)}), which vipkit never writes into a model folder "
            "and never loads, because unpickling can run arbitrary code; nothing was loaded. If you did not put it "
            "there, the folder was changed by someone else: get the model again from where it came from; otherwise "
            "delete the pickle file (vipkit needs only the safetensors files its manifest lists)."
        )


def check_weight_folder(folder: Path, *, refuse_any_pickle: bool = False) -> None:
    """Every safetensors file under ``folder`` is whole, and pickle weights are never an option.

    ``refuse_any_pickle``: the folder is one vipkit wrote, so any pickle file in it is refused. Otherwise (a
    downloaded folder, loaded with ``use_safetensors=True`` so pickle files beside safetensors ones are never
    opened) only a folder whose weights are all pickles is refused.
    """
    folder = Path(folder)
    if refuse_any_pickle:
        refuse_pickle_files(folder)
    safetensors = sorted(folder.rglob("*.safetensors"))
    pickles = pickle_files(folder)
    if pickles and not safetensors:
        raise CorruptWeightsError(
            f"{folder} holds only pickle weights ({_names(folder, pickles)}); vipkit loads safetensors only, because "
            "unpickling can run arbitrary code. Convert them once in a trusted environment (load, then "
            "save_pretrained with safe_serialization=True) or download the .safetensors variant."
        )
    for path in safetensors:
        check_safetensors(path)


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` by relative path (what a saved model's manifest records)."""
    return {str(p.relative_to(folder)): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def check_manifest_files(folder: Path, files: Any, manifest: str) -> dict[str, str]:
    """``files`` of a manifest (``manifest``: its file name, for messages) as ``{relative path: sha256}``, once
    every name is checked to stay inside ``folder``: no absolute path, no ``..``, no symlink resolving outside.
    Nothing is opened (symlinks are resolved by name)."""
    where = Path(folder) / manifest
    if not isinstance(files, Mapping):
        raise CorruptWeightsError(
            f"{where} is corrupt: its 'files' entry is a JSON {type(files).__name__}, not an object of file digests; "
            "get the model again from where it came from"
        )
    root = Path(folder).resolve()
    for name, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise CorruptWeightsError(
                f"{where} is corrupt: the digest of {name!r} is {digest!r}, not a sha256; "
                "get the model again from where it came from"
            )
        parts = PurePosixPath(name).parts
        outside = (
            not name
            or PurePosixPath(name).is_absolute()
            or PureWindowsPath(name).is_absolute()
            or PureWindowsPath(name).drive != ""
            or ".." in parts
            or "\\" in name
            or "\0" in name
        )
        if not outside:
            resolved = (root / name).resolve()
            outside = resolved != root and root not in resolved.parents
        if outside:
            raise UnsafeWeightsError(
                f"{where} lists {name!r}, which is not a file inside {folder} (an absolute path, '..' or a symlink "
                "leading out of the folder); vipkit refused the folder before opening any file in it. vipkit writes "
                "only paths inside the folder there, so the manifest was altered: get the model again from where "
                "it came from."
            )
    return dict(files)


def verify_digests(folder: Path, expected: Any, manifest: str = "the manifest") -> None:
    """Check every name of ``expected`` (``check_manifest_files``) before opening any, then raise
    ``CorruptWeightsError`` naming the first file that is missing or differs from its digest."""
    for name, digest in check_manifest_files(folder, expected, manifest).items():
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


# -- official pickle files, converted once -----------------------------------------------------------------


def converted_copy(path: Path) -> Path:
    """Where ``load_official_state`` keeps the safetensors copy of ``path``: beside it, ``NAME.safetensors``."""
    return path.with_name(path.name + ".safetensors")


def load_official_state(path: str | Path) -> dict[str, Tensor]:
    """The flat state dict of an official weight file: a ``.safetensors`` file as it is; a pickle (``.pth``)
    read once with ``torch.load(weights_only=True)`` (tensors and plain containers only: no code can run) and
    written beside it as ``NAME.safetensors`` with the pickle's sha256, which later loads read instead (a pickle
    that changed is read and copied again). Where the folder is read-only no copy is kept and every load reads
    the pickle the same restricted way. Errors: ``OSError``, ``ValueError`` (not a flat state dict) and
    ``pickle.UnpicklingError`` (an object the restricted reader refuses), for the caller to name its option.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        check_safetensors(path)
        return load_file(path)
    source_sha256 = file_sha256(path)  # reading bytes, not unpickling
    copy = converted_copy(path)
    if copy.is_file():
        try:
            check_safetensors(copy)
            from safetensors import safe_open

            with safe_open(copy, framework="pt") as f:
                recorded = (f.metadata() or {}).get("source_sha256")
            if recorded == source_sha256:
                return load_file(copy)
        except (VipkitError, SafetensorError, OSError):
            pass  # a damaged copy is made again below
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a flat state dict of tensors")
    state = {key: value.contiguous() for key, value in state.items()}
    tmp = copy.with_name(f".{copy.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        save_file(state, tmp, metadata={"format": "pt", "source": path.name, "source_sha256": source_sha256})
        os.replace(tmp, copy)  # atomic: ranks converting at once each rename a whole file
    except (OSError, RuntimeError, ValueError, SafetensorError):  # read-only folder, full disk, shared tensors
        tmp.unlink(missing_ok=True)  # no copy kept: the next load reads the pickle the same restricted way
    return state


# -- no machine paths in saved configs ---------------------------------------------------------------------


def _without(value: Any, keys: tuple[str, ...], top: tuple[str, ...] = ()) -> tuple[Any, bool]:
    """``value`` without ``keys`` at any depth and ``top`` at its top level; whether anything was removed."""
    if isinstance(value, dict):
        changed = False
        cleaned = {}
        for key, item in value.items():
            if key in keys or key in top:
                changed = True
                continue
            cleaned[key], inner = _without(item, keys)
            changed = changed or inner
        return cleaned, changed
    if isinstance(value, list):
        items = [_without(item, keys) for item in value]
        return [item for item, _ in items], any(inner for _, inner in items)
    return value, False


def scrub_source_paths(folder: Path) -> list[Path]:
    """Remove what diffusers and transformers record of where a model was loaded from, from every
    ``*config.json`` and ``model_index.json`` under ``folder``: ``_name_or_path`` (and the older ``name_or_path``),
    the loaded folder's absolute path, at any depth; a tokenizer's ``is_local`` / ``local_files_only``. A saved
    model's bytes then do not depend on where it was loaded from, and no machine path is written. Returns the
    files rewritten (JSON with the same key order, indent 2)."""
    from vipkit.atomic import write_text

    rewritten = []
    for path in sorted(Path(folder).rglob("*.json")):
        if not (path.name.endswith("config.json") or path.name == "model_index.json") or not path.is_file():
            continue
        raw = path.read_bytes()
        top = LOAD_FLAG_KEYS if path.name == "tokenizer_config.json" else ()
        if b"name_or_path" not in raw and not any(key.encode() in raw for key in top):
            continue
        try:
            data, changed = _without(json.loads(raw), SOURCE_PATH_KEYS, top)
        except ValueError:
            continue
        if changed:
            write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            rewritten.append(path)
    return rewritten


def forget_source_paths(*modules: Any) -> None:
    """Drop the ``_name_or_path`` that diffusers' ``from_pretrained`` records in a loaded model's (or pipeline's)
    config, and what a transformers tokenizer records of its loading, so nothing saved or exported from them later
    writes the folder they came from."""
    for module in modules:
        init_kwargs = getattr(module, "init_kwargs", None)  # a transformers tokenizer
        if isinstance(init_kwargs, dict):
            for key in (*SOURCE_PATH_KEYS, *LOAD_FLAG_KEYS):
                init_kwargs.pop(key, None)
        internal = getattr(module, "_internal_dict", None)
        if isinstance(internal, Mapping) and "_name_or_path" in internal:
            from diffusers.configuration_utils import FrozenDict

            module._internal_dict = FrozenDict({k: v for k, v in internal.items() if k != "_name_or_path"})
        config = getattr(module, "config", None)
        if getattr(config, "_name_or_path", "") and not isinstance(config, Mapping):
            config._name_or_path = ""  # transformers: not written by current versions; cleared for older ones


def keep_saved_tokenizer_config(tokenizer: Any, folder: Path) -> None:
    """Make a tokenizer loaded from ``folder`` save the same ``tokenizer_config.json`` it was loaded from: drop the
    init options loading derived from ``tokenizer.json`` (``BACKEND_STATE_KEYS``) that the file did not hold. They
    stay in ``tokenizer.json`` (saved again unchanged) and are derived again on the next load, so nothing is lost,
    and a model saved, reloaded and saved again (a re-run of a finished run) writes the same bytes."""
    init_kwargs = getattr(tokenizer, "init_kwargs", None)
    try:
        saved = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(init_kwargs, dict) and isinstance(saved, dict):
        for key in BACKEND_STATE_KEYS:
            if key not in saved:
                init_kwargs.pop(key, None)
