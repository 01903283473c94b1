"""Two-stage SmolTolk training with the Hugging Face `Trainer` (paper sections 3.2 and 4.1).

- `optim`: parameter roles and groups, `TwoStageSchedule` (the stage-1 trapezoid and stage-2 constant rates),
  `sqrt_batch_factor` (the stage-2 backbone rate for a batch size);
- `callback`: `TwoStageCallback` (stage/data agreement, exact resume of the data position, tokens seen);
- `trainer`: `SmolTolkTrainer` (optimizer groups, frozen backbone in stage 1, separate loss logging);
- `config`: the typed training configuration (`TrainConfig`: the YAML's sections as dataclasses, strict keys,
  command-line overrides);
- `checkpoints`: which checkpoints are complete, and what a new run may replace;
- `train`: the `smoltolk train CONFIG` entry point.
"""

from .callback import TwoStageCallback
from .config import TrainConfig, load_config
from .optim import (
    TwoStageSchedule,
    parameter_groups,
    parameter_role,
    sqrt_batch_factor,
    stage1_peak_factor,
    two_stage_scheduler,
)
from .train import build_trainer, cli_train, run_training
from .trainer import SmolTolkTrainer, mixture_stream

__all__ = [
    "SmolTolkTrainer",
    "TrainConfig",
    "TwoStageCallback",
    "TwoStageSchedule",
    "build_trainer",
    "cli_train",
    "load_config",
    "mixture_stream",
    "parameter_groups",
    "parameter_role",
    "run_training",
    "sqrt_batch_factor",
    "stage1_peak_factor",
    "two_stage_scheduler",
]
