"""Two real processes (torchrun or accelerate launch, gloo on CPU) against one: the same training update, the same run decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import MICRO_RECIPE, rank_errors, run_vipkit
from safetensors.torch import load_file

from vipkit.pair_store import load_pairs
from vipkit.testing import tiny_model
from vipkit_animatediff.persistence import unet_weights

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
# accelerate's --cpu starts one process; --multi_gpu starts two through torch's launcher, which join gloo on a CPU machine
ACCELERATE = (
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
)
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
import vipkit
from vipkit import distributed
from vipkit.checkpoint import CheckpointStore
from vipkit.plugins import load_plugins
from vipkit.recipe import TrainSection
from vipkit.testing import tiny_model
from vipkit.training import WeightedLoss, train_on_pairs

out, fsdp, checkpoints = sys.argv[1], sys.argv[2] == "fsdp", sys.argv[3] if len(sys.argv) > 3 else None
teacher = tiny_model("animatediff", height=16, width=16, num_frames=4, num_inference_steps=2)
winners, losers = torch.randn(2, 5, 4, 4, 8, 8, generator=torch.Generator().manual_seed(11))
pairs = vipkit.PairSet([f"prompt {i}" for i in range(5)], list(range(5)), winners, losers, torch.zeros(5), torch.zeros(5), ["x"])
loss = load_plugins().registry("losses").get("redpo").from_options({"sft_weight": 1.0})
# 5 pairs, batch 3 in 2 micro-batches: steps of 3 and 2 pairs, micro-batches of 2+1 and 1+1 pairs, so a rank
# sometimes has no pair of a micro-batch (its zero-weighted stand-in must not change the update)
settings = TrainSection(epochs=2, batch_size=3, gradient_accumulation_steps=2, learning_rate=1e-2, optimizer="sgd", fsdp=fsdp,
                        checkpoint_every=1, keep_checkpoints=10)
store = CheckpointStore(Path(checkpoints), keep=10) if checkpoints else None


def trained():
    student = teacher.copy()
    student.remove_block("up_blocks.0.motion_modules.1")
    losses = []
    summary = train_on_pairs(student, teacher, pairs, [WeightedLoss(1.0, loss)], settings, seed=5,
                             log=lambda m: losses.append(m["loss"]), checkpoints=store, pairs_hash="p")
    return {k: v.clone() for k, v in student.denoiser().state_dict().items()}, losses, summary


weights, losses, _ = trained()
report = {"world": distributed.world_size(), "losses": losses}
report["gathered"] = distributed.map_sharded(lambda indices: [(distributed.rank(), i * i) for i in indices], 5)
if store is not None:  # as if killed after step 2: resume from there, on every rank, and get the same weights
    if distributed.is_main():
        for late in store.complete()[2:]:
            late.rename(late.with_name("." + late.name + ".gone"))
    distributed.barrier()
    again, _, summary = trained()
    report["resumed_at_step"] = summary["resumed_at_step"]
    report["resume_bit_identical"] = all(torch.equal(again[k], v) for k, v in weights.items())
if distributed.is_main():
    save_file({k: v.contiguous() for k, v in weights.items()}, out)
    print(json.dumps(report))
distributed.finish()
"""


def run_training(
    tmp_path: Path, launcher: tuple[str, ...], mode: str = "ddp", checkpoints: bool = False
) -> tuple[dict, dict[str, torch.Tensor]]:
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    out = tmp_path / f"weights-{mode}-{len(launcher)}.safetensors"
    extra = [str(tmp_path / f"checkpoints-{mode}")] if checkpoints else []
    result = subprocess.run(
        [sys.executable, *launcher, str(script), str(out), mode, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **ENV},
    )
    assert result.returncode == 0, rank_errors(result)
    return json.loads(result.stdout.strip().splitlines()[-1]), load_file(str(out))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return run_training(tmp_path_factory.mktemp("one"), ())


def test_two_processes_train_the_same_weights_as_one_with_the_same_global_batch(one_process, tmp_path):
    one, weights_one = one_process
    two, weights_two = run_training(tmp_path, TORCHRUN)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["gathered"] == [[0, 0], [0, 1], [0, 4], [0, 9], [0, 16]]
    assert two["gathered"] == [[0, 0], [1, 1], [0, 4], [1, 9], [0, 16]]  # sharded by index, gathered in order
    assert len(one["losses"]) == len(two["losses"]) == 4
    # the logged loss is the global-batch mean (beta 5000 magnifies float rounding of batch-size-dependent kernels)
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-3)
    start = tiny_model("animatediff", height=16, width=16, num_frames=4).denoiser().state_dict()
    assert max((v - start[k]).abs().max().item() for k, v in weights_one.items()) > 1e-4  # training moved the weights
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=0, atol=1e-6, msg=key)


def test_fsdp_on_two_processes_trains_the_same_weights_and_resumes_bit_identically(one_process, tmp_path):
    one, weights_one = one_process
    two, weights_two = run_training(tmp_path, TORCHRUN, mode="fsdp", checkpoints=True)
    assert two["world"] == 2 and two["losses"] == pytest.approx(one["losses"], rel=1e-3)
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=0, atol=1e-6, msg=key)
    assert two["resumed_at_step"] == 2 and two["resume_bit_identical"]
    saved = sorted(p.name for p in (tmp_path / "checkpoints-fsdp").iterdir() if not p.name.startswith("."))
    assert saved[-1] == "stage-001-step-00000004"
    assert (
        load_file(str(tmp_path / "checkpoints-fsdp" / saved[-1] / "parameters.safetensors"))["param.0"].dim() >= 1
    )  # full tensors


@pytest.mark.parametrize("launcher", [TORCHRUN, ACCELERATE], ids=["torchrun", "accelerate-launch"])
def test_two_process_run_takes_the_same_decisions_and_pairs_as_one(micro_reference, tmp_path, launcher):
    out = tmp_path / "two"
    result = run_vipkit("compress", "--recipe", MICRO_RECIPE, "--out", str(out), launcher=launcher)
    assert result.returncode == 0, rank_errors(result)
    assert result.stdout.count("| teacher |") == 1  # only rank 0 prints the results
    assert "running on 2 processes" in result.stderr
    assert (
        "training: 2 pairs per step on 2 processes: each runs 1 micro-batch of ≤ 1 pair" in result.stderr
    )  # both train
    for stage in (1, 2):
        name = f"stages/stage-{stage:03d}.pairs"
        one_record = json.loads((micro_reference / name / "prune.json").read_text())
        two_record = json.loads((out / name / "prune.json").read_text())
        assert two_record["removed_blocks"] == one_record["removed_blocks"]
        assert [i["block"] for i in two_record["importance"]] == [i["block"] for i in one_record["importance"]]
        assert [i["importance"] for i in two_record["importance"]] == pytest.approx(
            [i["importance"] for i in one_record["importance"]], abs=1e-6
        )
        one_pairs, two_pairs = load_pairs(micro_reference / name), load_pairs(out / name)
        assert two_pairs.prompts == one_pairs.prompts and two_pairs.target_dimensions == one_pairs.target_dimensions
        torch.testing.assert_close(
            two_pairs.loser_latents, one_pairs.loser_latents, rtol=0, atol=2e-4
        )  # batch-size rounding
        torch.testing.assert_close(two_pairs.winner_latents, one_pairs.winner_latents, rtol=0, atol=2e-4)
    final_one = load_file(str(unet_weights(micro_reference / "model")))
    final_two = load_file(str(unet_weights(out / "model")))
    assert final_one.keys() == final_two.keys()
    for key, value in final_one.items():
        torch.testing.assert_close(final_two[key], value, rtol=0, atol=2e-3, msg=key)
