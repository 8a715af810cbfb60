"""Training checkpoints: exact round trip of optimizer/scheduler/RNG, newest-N, incomplete ones ignored."""

from __future__ import annotations

import json

import torch

from vipkit.checkpoint import CheckpointStore, TrainingState
from vipkit.training import lr_factor


def trained_state(stage: int, step: int, pairs_hash: str = "p") -> tuple[TrainingState, torch.nn.Linear]:
    """A real AdamW + LambdaLR after ``step`` steps on a small layer."""
    torch.manual_seed(step)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor("cosine", 1, 10))
    for _ in range(step):
        layer(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    params = list(layer.parameters())
    state = TrainingState(
        stage,
        step,
        ["a.b"],
        pairs_hash,
        params,
        optimizer.state_dict(),
        scheduler.state_dict(),
        rng=[torch.get_rng_state(), torch.Generator().manual_seed(9).get_state()],
        losses=[0.5] * step,
    )
    return state, layer


def test_round_trip_restores_optimizer_scheduler_and_rng_exactly(tmp_path):
    store = CheckpointStore(tmp_path)
    state, layer = trained_state(2, 3)
    path = store.write(state)
    assert path.name == "stage-002-step-00000003"
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json",
        "optimizer.safetensors",
        "parameters.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    back = store.newest(2, "p")
    assert back is not None and (back.stage, back.step, back.removed_blocks, back.losses) == (2, 3, ["a.b"], [0.5] * 3)
    assert all(torch.equal(a, b) for a, b in zip(back.parameters, state.parameters, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(back.rng, state.rng, strict=True))
    # a fresh optimizer loaded from the checkpoint takes the very same next step as the original
    copy = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p, saved in zip(copy.parameters(), back.parameters, strict=True):
            p.copy_(saved)
    optimizer = torch.optim.AdamW(copy.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor("cosine", 1, 10)
    )  # as the trainer: build, then load
    optimizer.load_state_dict(back.optimizer)
    scheduler.load_state_dict(back.scheduler)
    original_optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    original_optimizer.load_state_dict(state.optimizer)
    x = torch.randn(4, 3)
    for model, opt in ((layer, original_optimizer), (copy, optimizer)):
        model(x).pow(2).sum().backward()
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), copy.parameters(), strict=True))
    assert scheduler.get_last_lr() == [0.1 * lr_factor("cosine", 1, 10)(3)]


def test_keeps_the_newest_n_complete_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(1, 5):
        store.write(trained_state(1, step)[0])
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["stage-001-step-00000003", "stage-001-step-00000004"]
    store.write(trained_state(2, 1)[0])
    assert [p.name for p in store.complete()] == ["stage-001-step-00000004", "stage-002-step-00000001"]


def test_incomplete_or_corrupt_checkpoints_are_skipped(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for step in (1, 2, 3):
        store.write(trained_state(1, step)[0])
    newest = store.path(1, 3)
    (newest / "parameters.safetensors").write_bytes(b"torn")  # a file that no longer matches the manifest
    (tmp_path / ".stage-001-step-00000004.staging").mkdir()  # a write killed before its rename
    (tmp_path / ".stage-001-step-00000004.staging" / "parameters.safetensors").write_bytes(b"half")
    assert store.newest(1, "p").step == 2
    (store.path(1, 2) / "manifest.json").unlink()  # a folder without manifest never counts
    assert store.newest(1, "p").step == 1
    assert [p.name for p in store.complete()] == ["stage-001-step-00000001"]
    manifest = json.loads((store.path(1, 1) / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "optimizer.safetensors",
        "parameters.safetensors",
        "rng.safetensors",
        "state.json",
    }


def test_other_stage_or_other_pairs_do_not_resume(tmp_path):
    store = CheckpointStore(tmp_path)
    store.write(trained_state(1, 2, pairs_hash="old")[0])
    assert store.newest(1, "new") is None and store.newest(2, "old") is None and store.newest(1, "old").step == 2
