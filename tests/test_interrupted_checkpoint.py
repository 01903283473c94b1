"""A run killed while it writes a checkpoint resumes from the newest complete one, bit-identical to a run that was
never interrupted; the incomplete checkpoint is recognised, passed over and named."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import STEPS, tiny_training_config, write_assets
from transformers.utils import logging as hf_logging

from smoltolk_hf.training import run_training
from smoltolk_hf.training.checkpoints import is_complete

KILLED_AT = 6  # checkpoints every 2 steps: 2 and 4 complete, 6 interrupted

# Runs the config in a fresh process and dies in the middle of writing checkpoint KILLED_AT: after the Trainer's
# files, with one of them half-written, before the SmolTolk completion marker.
KILLER = """
import os, sys
from transformers import TrainerCallback
from smoltolk_hf.training import build_trainer

class DieWhileSaving(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            folder = os.path.join(args.output_dir, f"checkpoint-{{state.global_step}}")
            with open(os.path.join(folder, "optimizer.pt"), "r+b") as f:
                f.truncate(100)
            os._exit(3)

trainer = build_trainer(sys.argv[1])
trainer.pop_callback(trainer.two_stage)  # the marker is written last: put the killer before it
trainer.add_callback(DieWhileSaving())
trainer.add_callback(trainer.two_stage)
trainer.train()
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    return write_assets(str(tmp_path_factory.mktemp("assets")))


def test_resume_after_a_kill_during_a_checkpoint_write(assets, tmp_path, caplog):
    straight = run_training(tiny_training_config(assets, str(tmp_path / "straight")))
    run_dir = tmp_path / "killed"
    config = tiny_training_config(assets, str(run_dir), save_strategy="steps", save_steps=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(__file__), os.environ.get("PYTHONPATH")])),
    }
    killed = subprocess.run(
        [sys.executable, "-c", KILLER.format(step=KILLED_AT), str(path)], env=env, capture_output=True, text=True
    )
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert is_complete(run_dir / "checkpoint-4") and not is_complete(run_dir / f"checkpoint-{KILLED_AT}")

    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            resumed = run_training(config, resume=True)
    finally:
        hf_logging.disable_propagation()
    assert f"checkpoint-{KILLED_AT}" in caplog.text and "incomplete" in caplog.text
    assert f"Resuming from {run_dir / 'checkpoint-4'}" in caplog.text
    assert resumed.state.global_step == STEPS
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name


def test_an_incomplete_checkpoint_given_by_path_is_refused(assets, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny_training_config(assets, str(run_dir), max_steps=2, save_strategy="steps", save_steps=1)
    run_training(config)
    os.remove(run_dir / "checkpoint-2" / "smoltolk_state.json")  # as if killed before the marker
    with pytest.raises(ValueError) as caught:
        run_training(config, resume=str(run_dir / "checkpoint-2"))
    message = str(caught.value)
    assert "checkpoint-2" in message and "interrupted while being written" in message
    assert f"Resume from {run_dir / 'checkpoint-1'}" in message
