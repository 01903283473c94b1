"""`TwoStageCallback`: the stage, data position and tokens-seen bookkeeping of a two-stage `Trainer` run.

The data switch needs no signal: `SmolTolkMixture` decides the stage of global sample `k` by
`k < stage1_samples`, and with `stage1_samples = stage1_steps * total_train_batch_size` the data switches exactly
when optimizer step `stage1_steps` begins (the learning rates switch there too, see `training.optim`). This
callback checks that the two agree, announces the switch, and makes resuming exact:

- **Resume = restore the mixture position, never replay.** Every optimizer step consumes exactly
  `total_train_batch_size / mixture.world_size` samples of this process's stream (the mixture is infinite, so
  there are no partial epochs), hence the position after `global_step` steps is a pure function of the step
  count. `on_train_begin` sets it, which also holds with DataLoader workers (whose consumption the main
  process cannot see); the Trainer's own batch skipping must be off (`ignore_data_skip=True`, which
  `SmolTolkTrainer` sets), or the consumed batches would be skipped twice.
- `on_save` writes `smoltolk_state.json` into each checkpoint, last (under a temporary name, then renamed), so that
  its presence marks a checkpoint the Trainer wrote to the end (`checkpoints.is_complete`): the mixture state
  (seed, `stage1_samples`, world size, position) and the tokens seen per modality. Resuming from that checkpoint
  validates the mixture settings against it (a changed seed, stage length, batch geometry or world size is
  refused) and restores the token counters.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..data.mixture import SmolTolkMixture
from .optim import TwoStageSchedule

logger = logging.get_logger(__name__)

STATE_NAME = "smoltolk_state.json"


def total_train_batch_size(args: TrainingArguments) -> int:
    """Samples per optimizer step over all processes: per-device batch x gradient accumulation x processes."""
    return args.train_batch_size * args.gradient_accumulation_steps * args.world_size


class TwoStageCallback(TrainerCallback):
    """Keeps a `SmolTolkMixture` in step with a `TwoStageSchedule` and makes resuming exact (module docstring).

    Args:
        schedule: the stage boundary and learning-rate factors the optimizer follows.
        mixture: the training dataset.
        resume_from: the checkpoint folder training resumes from (`SmolTolkTrainer.train` sets it).
    """

    def __init__(self, schedule: TwoStageSchedule, mixture: SmolTolkMixture, resume_from: str | None = None):
        self.schedule, self.mixture, self.resume_from = schedule, mixture, resume_from
        self.tokens_seen = {"text": 0, "speech": 0}  # scored targets, summed over processes

    def samples_per_step(self, args: TrainingArguments) -> int:
        """Samples of this process's mixture stream consumed by one optimizer step."""
        return total_train_batch_size(args) // self.mixture.world_size

    def stage(self, state: TrainerState) -> int:
        """Stage of the optimizer step about to run."""
        return self.schedule.stage(state.global_step)

    def _state(self, args: TrainingArguments, global_step: int) -> dict[str, Any]:
        mixture = {**self.mixture.state_dict(), "samples_consumed": global_step * self.samples_per_step(args)}
        return {"mixture": mixture, "tokens_seen": dict(self.tokens_seen), "stage1_steps": self.schedule.stage1_steps}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        expected = self.schedule.stage1_steps * total_train_batch_size(args)
        if self.mixture.stage1_samples != expected:
            raise ValueError(
                f"The mixture's stage1_samples={self.mixture.stage1_samples} does not match the schedule: "
                f"stage1_steps={self.schedule.stage1_steps} x total train batch size {total_train_batch_size(args)} "
                f"= {expected}. Build the mixture with stage1_samples=stage1_steps * total_train_batch_size."
            )
        if not args.ignore_data_skip:
            raise ValueError("TwoStageCallback restores the data position itself: set ignore_data_skip=True.")
        position = self._state(args, state.global_step)
        if self.resume_from is not None:
            path = os.path.join(self.resume_from, STATE_NAME)
            if not os.path.isfile(path):
                raise ValueError(
                    f"Cannot resume from {self.resume_from}: it has no {STATE_NAME} (not a SmolTolk run)."
                )
            with open(path) as f:
                saved = json.load(f)
            self.mixture.load_state_dict(saved["mixture"])  # refuses another seed, stage1_samples or world size
            if saved["mixture"]["samples_consumed"] != position["mixture"]["samples_consumed"]:
                raise ValueError(
                    f"Cannot resume from {self.resume_from}: its data position ({saved['mixture']['samples_consumed']} "
                    f"samples) does not match {state.global_step} steps of {self.samples_per_step(args)} samples; "
                    "was the batch size or gradient accumulation changed?"
                )
            self.tokens_seen = dict(saved["tokens_seen"])
        self.mixture.load_state_dict(position["mixture"])
        if state.global_step < self.schedule.stage1_steps:
            logger.info(
                f"Stage 1 until step {self.schedule.stage1_steps}: backbone frozen, interleaved data only, speech "
                f"parameters at up to {self.schedule.speech_peak_factor:g}x the base learning rate."
            )

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step == self.schedule.stage1_steps > 0:
            logger.info(f"Stage 2 from step {state.global_step}: everything trainable, full data mixture.")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # every process has written its part (its RNG state) before the marker
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            path = os.path.join(folder, STATE_NAME)
            with open(f"{path}.tmp", "w") as f:
                json.dump(self._state(args, state.global_step), f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(f"{path}.tmp", path)  # the completion marker appears whole or not at all
