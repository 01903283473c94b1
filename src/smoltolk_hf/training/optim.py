"""Parameter groups and the two-stage learning-rate schedules (paper sections 3.2 and 4.1).

Every parameter has one *role*, read from its name:

| role       | parameters                                                         | stage 1                  | stage 2  |
|------------|--------------------------------------------------------------------|--------------------------|----------|
| `backbone` | `model.layers`, `model.norm`, `model.embed_tokens` (+ tied `lm_head`) | frozen                   | base rate |
| `speech`   | input/output adapters, speech embeddings, marker embeddings        | trapezoid, peak <= 10x   | base rate |
| `pooling`  | `model.layer_pooling` (`phi`, selector `S`, pooled-state gain)     | base rate                | base rate |

Each role is split into a weight-decayed group (matrices, `ndim >= 2`) and an undecayed one (norms, biases,
`static_weights`), as nanoGPT's `configure_optimizers` does. The schedule is one `LambdaLR` with one lambda per
group: the learning rate of a group at optimizer step `s` is `base_lr * schedule.lr_factor(role, s)`.

"Frozen" means bit-identical: in stage 1 `SmolTolkTrainer` gives the backbone `requires_grad=False` (or, under a
DDP/FSDP wrapper, drops its gradients before clipping), so AdamW skips those parameters entirely (no update, no
weight decay, no moments) and stage 2 starts their AdamW state fresh. Every group is in the optimizer from the
start. Their stage-1 factor is 0 as well, so logged learning rates tell the truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..modeling_smoltolk import BACKBONE_PARAMETER_PREFIXES

ROLES = ("speech", "pooling", "backbone")  # speech first: the Trainer logs the first group's learning rate
FROZEN_IN_STAGE1 = ("backbone",)
_ROLE_PREFIXES = {
    "speech": ("model.input_adapter.", "model.output_adapter.", "model.speech_embed_tokens.", "model.marker_embed."),
    "pooling": ("model.layer_pooling.",),
    "backbone": BACKBONE_PARAMETER_PREFIXES,
}
# Name segments added by wrappers (DDP, FSDP, activation checkpointing, torch.compile): not part of the role.
_WRAPPER_SEGMENTS = ("module", "_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def parameter_role(name: str) -> str:
    """The role (`backbone`, `speech` or `pooling`) of a `SmolTolkForCausalLM` parameter, by name."""
    name = ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)
    for role, prefixes in _ROLE_PREFIXES.items():
        if name.startswith(prefixes):
            return role
    raise ValueError(f"Parameter {name!r} has no training role: add its module to training.optim._ROLE_PREFIXES.")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: one per (role, decayed or not), each tagged with `role` and `name`; empty ones left out.

    Weight decay applies to matrices only (`ndim >= 2`: linear weights and embeddings), never to norms, biases or
    the static pooling weights. Tied weights (`lm_head` / `embed_tokens`) appear once.
    """
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {
        (role, decay): [] for role in ROLES for decay in (True, False)
    }
    for name, param in model.named_parameters():
        groups[parameter_role(name), param.ndim >= 2].append(param)
    return [
        {
            "params": params,
            "weight_decay": weight_decay if decay else 0.0,
            "role": role,
            "name": f"{role}.{'decay' if decay else 'no_decay'}",
        }
        for (role, decay), params in groups.items()
        if params
    ]


@dataclass(frozen=True)
class TwoStageSchedule:
    """Learning-rate factors of the two stages (multiples of the base rate `TrainingArguments.learning_rate`).

    Stage 1 is optimizer steps `[0, stage1_steps)`: the backbone is frozen (factor 0), the pooling weights run at
    the base rate and the speech parameters follow a trapezoid: linear warm-up over `warmup_steps` to
    `peak_factor`, then linear decay to 0 over the last `decay_fraction` of stage 1 (reaching 0 exactly at the
    switch). In stage 2 the speech and pooling parameters run at the base rate and the backbone at `backbone_factor`
    times it, every group after a linear warm-up over the first `stage2_warmup_steps` of stage 2. Paper: 1000
    stage-1 steps, 100 warm-up steps, peak 10x, decay over the last 20%, no stage-2 warm-up, and the backbone at
    the base rate for its batch of `PAPER_BATCH_TOKENS` tokens.

    `backbone_factor=None` (the default) means the square-root rule for the run's batch: `build_trainer` (and so
    `smoltolk train`) sets it to `sqrt_batch_factor(tokens per optimizer step)`, which is 1 at the paper's batch and
    below it for smaller batches, so that small-batch runs keep the text LM (docs/training.md). A schedule built by
    hand and left at None uses 1. `peak_factor=None` (the default) is the same rule for the stage-1 peak of the
    speech parts, floored at the base rate: `build_trainer` sets it to `stage1_peak_factor(tokens per optimizer
    step)`, 10 at the paper's batch, 1 at a small one (the paper's 10x makes small-batch runs diverge,
    docs/training.md); a schedule built by hand and left at None uses 10.
    """

    stage1_steps: int = 1000
    warmup_steps: int = 100
    peak_factor: float | None = None
    decay_fraction: float = 0.2
    backbone_factor: float | None = None
    stage2_warmup_steps: int = 0

    def __post_init__(self):
        if self.stage1_steps < 0 or self.warmup_steps < 0:
            raise ValueError(
                f"stage1_steps and warmup_steps must be >= 0, got {self.stage1_steps}, {self.warmup_steps}."
            )
        if self.stage1_steps and self.warmup_steps > self.stage1_steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} exceeds stage1_steps={self.stage1_steps}.")
        if (self.peak_factor is not None and self.peak_factor <= 0) or not 0 < self.decay_fraction <= 1:
            raise ValueError(
                f"peak_factor must be > 0 and decay_fraction in (0, 1], got {self.peak_factor}, {self.decay_fraction}."
            )
        if self.backbone_factor is not None and self.backbone_factor <= 0:
            raise ValueError(
                f"backbone_factor must be > 0 (or None for the square-root batch rule), got {self.backbone_factor}."
            )
        if self.stage2_warmup_steps < 0:
            raise ValueError(f"stage2_warmup_steps must be >= 0, got {self.stage2_warmup_steps}.")

    @property
    def speech_peak_factor(self) -> float:
        """The stage-1 peak of the speech parts (`peak_factor`, the paper's 10 when unset)."""
        return PAPER_PEAK_FACTOR if self.peak_factor is None else self.peak_factor

    @property
    def decay_steps(self) -> int:
        return max(1, round(self.decay_fraction * self.stage1_steps))

    def stage(self, step: int) -> int:
        """Stage (1 or 2) of optimizer step `step` (0-based: the step that `TrainerState.global_step` counts up to)."""
        return 1 if step < self.stage1_steps else 2

    def lr_factor(self, role: str, step: int) -> float:
        """Multiple of the base learning rate for parameters of `role` at optimizer step `step`."""
        if role not in ROLES:
            raise ValueError(f"Unknown role {role!r}; expected one of {ROLES}.")
        if self.stage(step) == 2:
            warm_up = (step - self.stage1_steps + 1) / self.stage2_warmup_steps if self.stage2_warmup_steps else 1.0
            backbone = 1.0 if self.backbone_factor is None else self.backbone_factor
            return (backbone if role == "backbone" else 1.0) * min(1.0, warm_up)
        if role == "pooling":
            return 1.0
        if role in FROZEN_IN_STAGE1:
            return 0.0
        warm_up = (step + 1) / self.warmup_steps if self.warmup_steps else 1.0
        decay = (self.stage1_steps - step) / self.decay_steps
        return self.speech_peak_factor * min(1.0, warm_up, decay)


# The paper's stage-1 peak of the speech parts, a multiple of the base rate (section 4.1).
PAPER_PEAK_FACTOR = 10.0
# Tokens per optimizer step of the paper's recipe (section 4.1: "a batch size of 1 million tokens"), as the example
# configs read it: 512 sequences of 2048.
PAPER_BATCH_TOKENS = 512 * 2048


def sqrt_batch_factor(tokens_per_step: int, reference_tokens: int = PAPER_BATCH_TOKENS) -> float:
    """The square-root scaling rule for Adam: `min(1, sqrt(tokens_per_step / reference_tokens))`, the multiple of a
    learning rate tuned at `reference_tokens` per step that keeps the update noise of a smaller batch at the same
    level (Malladi et al., 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms")."""
    if tokens_per_step <= 0:
        raise ValueError(f"tokens_per_step must be > 0, got {tokens_per_step}.")
    return min(1.0, math.sqrt(tokens_per_step / reference_tokens))


def stage1_peak_factor(tokens_per_step: int, reference_tokens: int = PAPER_BATCH_TOKENS) -> float:
    """The stage-1 peak of the speech parts for a batch of `tokens_per_step`: the paper's 10x scaled by the
    square-root rule (`sqrt_batch_factor`) but never below 1, the rate those parts take in stage 2 anyway: 10 at the
    paper's batch, 3.5 at 64 x 2048 tokens, 1 below about 10,000 tokens per step (docs/training.md)."""
    return max(1.0, PAPER_PEAK_FACTOR * sqrt_batch_factor(tokens_per_step, reference_tokens))


def two_stage_scheduler(optimizer: torch.optim.Optimizer, schedule: TwoStageSchedule) -> LambdaLR:
    """A `LambdaLR` giving each group of `parameter_groups` its role's factor (the groups' `lr` is the base rate)."""
    missing = [i for i, group in enumerate(optimizer.param_groups) if group.get("role") not in ROLES]
    if missing:
        raise ValueError(f"Optimizer groups {missing} have no role: build them with parameter_groups().")
    return LambdaLR(
        optimizer,
        [lambda step, role=group["role"]: schedule.lr_factor(role, step) for group in optimizer.param_groups],
    )
