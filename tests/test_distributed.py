"""The training entry under torchrun and accelerate launch: 2 CPU processes (gloo) step together and end with
identical weights, and the tokens they log add up to the global batch.

Both data modes are run under torchrun: each process reading its own mixture stream (the default,
`dispatch_batches=False`) and process 0 dispatching every batch. The per-stream run must also match one process
with the same total batch: the two processes jointly read exactly the samples that one process reads. Under
accelerate launch the config file `examples/configs/accelerate_cpu.yaml` is used; a launch that asked for
several processes but got one is named in a warning (`single_process_launch`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import BATCH, STEPS, tiny_training_config, write_assets
from transformers import TrainingArguments

from smoltolk_hf.modeling_smoltolk import SmolTolkForCausalLM
from smoltolk_hf.training import run_training
from smoltolk_hf.training.checkpoints import is_complete
from smoltolk_hf.training.trainer import single_process_launch

CONTEXT = 64  # tiny_training_config's context_length: every packed sample has it

WORKER = """
import hashlib, json, os, sys
from smoltolk_hf.training import run_training

trainer = run_training(sys.argv[1])
digest = hashlib.sha256()
for name, param in sorted(trainer.model.named_parameters()):
    digest.update(name.encode() + param.detach().numpy().tobytes())
mixture = trainer.train_dataset
report = dict(
    rank=trainer.args.process_index, world_size=trainer.args.world_size, steps=trainer.state.global_step,
    weights=digest.hexdigest(), stream=[mixture.rank, mixture.world_size], consumed=mixture.samples_consumed,
    tokens_seen=trainer.state.num_input_tokens_seen,
)
with open(os.path.join(sys.argv[2], f"rank{report['rank']}.json"), "w") as f:
    json.dump(report, f)
"""


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE_CPU = os.path.join(os.path.dirname(__file__), "..", "examples", "configs", "accelerate_cpu.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: dict, folder, command: list[str] = TORCHRUN) -> list[dict]:
    folder.mkdir()
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    (folder / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, str(folder / "worker.py"), str(folder / "train.yaml"), str(folder)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_processes_step_together_in_both_data_modes(tmp_path):
    assets = write_assets(str(tmp_path / "assets"))
    config = tiny_training_config(assets, str(tmp_path / "own_streams" / "out"))
    reports = launch(config, tmp_path / "own_streams")
    assert [r["world_size"] for r in reports] == [2, 2] and [r["steps"] for r in reports] == [STEPS, STEPS]
    assert reports[0]["weights"] == reports[1]["weights"]
    assert [r["stream"] for r in reports] == [[0, 2], [1, 2]]
    assert [r["tokens_seen"] for r in reports] == [STEPS * 2 * BATCH * CONTEXT] * 2  # summed over both processes
    for r in reports:  # each process built its own samples only (plus the loader's read-ahead)
        assert STEPS * BATCH <= r["consumed"] <= (STEPS + 2) * BATCH

    # One process with the same total batch reads the same samples per step: same training up to float sums.
    single = tiny_training_config(assets, str(tmp_path / "single"), per_device_train_batch_size=2 * BATCH)
    expected = run_training(single).model
    distributed = SmolTolkForCausalLM.from_pretrained(str(tmp_path / "own_streams" / "out"))
    for (name, a), b in zip(expected.named_parameters(), distributed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)

    config = tiny_training_config(
        assets, str(tmp_path / "dispatched" / "out"), accelerator_config={"dispatch_batches": True}
    )
    reports = launch(config, tmp_path / "dispatched")
    assert reports[0]["weights"] == reports[1]["weights"] and reports[0]["steps"] == STEPS
    assert [r["stream"] for r in reports] == [[0, 1], [0, 1]]
    assert reports[0]["consumed"] >= STEPS * 2 * BATCH and reports[1]["consumed"] == 0  # process 0 read for both
    dispatched = SmolTolkForCausalLM.from_pretrained(str(tmp_path / "dispatched" / "out"))
    for (name, a), b in zip(expected.named_parameters(), dispatched.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_accelerate_launch_runs_two_processes(tmp_path):
    assets = write_assets(str(tmp_path / "assets"))
    out = tmp_path / "accelerate" / "out"
    config = tiny_training_config(assets, str(out), save_strategy="steps", save_steps=STEPS // 2)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ACCELERATE_CPU]
    reports = launch(config, tmp_path / "accelerate", [*command, "--main_process_port", str(free_port())])
    assert [r["world_size"] for r in reports] == [2, 2] and [r["steps"] for r in reports] == [STEPS, STEPS]
    assert reports[0]["weights"] == reports[1]["weights"]
    assert [r["stream"] for r in reports] == [[0, 2], [1, 2]]
    assert [r["tokens_seen"] for r in reports] == [STEPS * 2 * BATCH * CONTEXT] * 2
    # The completion marker comes after every process's part of the checkpoint.
    checkpoint = out / f"checkpoint-{STEPS // 2}"
    assert is_complete(checkpoint) and {"rng_state_0.pth", "rng_state_1.pth"} <= set(os.listdir(checkpoint))


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, None),
        ({"WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}, None),  # torchrun --nproc_per_node 1
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "launched as one of 2"),  # processes that did not join one group
        ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1"}, "started this one only"),  # --cpu, 2 processes
        ({"ACCELERATE_USE_CPU": "True"}, None),  # accelerate launch --cpu with one process
    ],
)
def test_a_launch_that_got_one_process_of_several_is_named(environ, expected, tmp_path):
    warning = single_process_launch(TrainingArguments(output_dir=str(tmp_path), use_cpu=True), environ)
    assert warning is None if expected is None else expected in warning
