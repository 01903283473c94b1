"""`SmolTolkTrainer`: the HF `Trainer` with SmolTolk's parameter groups, two-stage schedule and loss logging.

What it adds to `Trainer`, and why each needs a subclass rather than a callback:

- `create_optimizer` / `create_scheduler`: the role groups of `training.optim` (the Trainer's own optimizer
  class and arguments, so `optim=adamw_torch_fused` etc. still work) and one `LambdaLR` lambda per group;
- `training_step`: stage 1 freezes the backbone (see "Frozen backbone" below);
- `get_batch_samples`: the loss normalisation (below);
- `compute_loss` / `log`: the text loss, speech loss and selector entropy the model returns are accumulated
  over micro-batches and processes and logged next to `loss`, with the tokens seen per modality;
- `get_train_dataloader`: see "Data across processes" below.

Data across processes. A `SmolTolkMixture` built with `rank=args.process_index, world_size=args.world_size`
gives each process its own disjoint stream, so every process builds only the samples it trains on. Accelerate
would otherwise either dispatch batches from process 0 (its default for iterable datasets; then build the
mixture with `rank=0, world_size=1`) or wrap the dataset in an `IterableDatasetShard` that makes every process
build all samples and keep a slice. With `dispatch_batches=False` and a rank-aware mixture, the shard wrapper is
turned into a pass-through, exactly as the Trainer itself does for rank-aware batch samplers. `mixture_stream`
says which rank/world size to build the mixture with for given `TrainingArguments`.

Frozen backbone. The optimizer holds every parameter from the start (so resume and the stage switch need no new
groups); stage 1 freezes the backbone's parameters (role `backbone`: layers, final norm, text embeddings and the
tied `lm_head`) in one of two ways, both leaving them with `grad=None` at the optimizer step, so that the clipping
norm covers the trained parameters only and AdamW skips the frozen ones entirely (no update, no weight decay, no
moments; stage 2 starts their AdamW state fresh):

- when the Trainer trains the bare model (one process, no DDP/FSDP/DeepSpeed/compile wrapper), they get
  `requires_grad=False` for the stage-1 micro-batches (set before each, from the step count, so a resumed run
  freezes too) and `requires_grad=True` again from stage 2 and when `train` returns. Autograd then computes no
  weight gradient for them while gradients still flow through the backbone's activations to the input adapter;
- when a wrapper trains it, their gradients are computed and dropped right after backward, before clipping. DDP
  registers the parameters that require grad when the Trainer wraps the model (in `_inner_training_loop`, before
  any callback runs) and reduces a fixed set of buckets from then on: a parameter frozen later would leave its
  bucket unreduced (with `ddp_find_unused_parameters=False`, an error at the next step; by DDP's design, not run
  here), and one unfrozen at the switch would never be reduced (each process's copy would drift). Freezing
  before the wrap cannot serve stage 2.

Loss normalisation. The loss of one optimizer step is the model's loss on the whole global batch (every
micro-batch of every process): cross-entropy summed over its scored targets divided by their number, minus
`entropy_beta` x the selector entropy summed over its non-padding positions divided by their number. So one step is
the same for one batch of B, k accumulated micro-batches of B/k and P processes of B/P. `get_batch_samples` counts
both (`loss_normalizers`, the model's own rule) over the micro-batches of the step, summed over processes under
`average_tokens_across_devices` (the default), and passes them to the model as `num_items_in_batch` and
`num_positions_in_batch`; each micro-batch's loss is then its share of the global loss. The Trainer does not divide
such a loss by the accumulation steps and multiplies it by the processes, which DDP's gradient average undoes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from accelerate.data_loader import IterableDatasetShard
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging

from ..data.mixture import SmolTolkMixture
from ..modeling_smoltolk import loss_normalizers
from .callback import STATE_NAME, TwoStageCallback
from .checkpoints import is_complete, last_complete_checkpoint
from .optim import FROZEN_IN_STAGE1, ROLES, TwoStageSchedule, parameter_groups, two_stage_scheduler

logger = logging.get_logger(__name__)

# Per-micro-batch sums accumulated between logs: text CE sum, text targets, speech CE sum, speech targets,
# selector entropy sum, selector positions.
_PARTS = ("text_sum", "text_n", "speech_sum", "speech_n", "entropy_sum", "entropy_n")


def dispatches_batches(args: TrainingArguments) -> bool:
    """Whether process 0 reads every batch and sends each process its share (accelerate's `dispatch_batches`;
    unset means yes for an iterable dataset on several processes)."""
    dispatch = args.accelerator_config.dispatch_batches
    return args.world_size > 1 and (dispatch is None or dispatch)


def single_process_launch(args: TrainingArguments, environ: Mapping[str, str] | None = None) -> str | None:
    """Why this process trains alone although its launch asked for several processes (a warning), else None.

    Two launches end up so: a launcher that started N processes (`WORLD_SIZE`, `PMI_SIZE` or
    `OMPI_COMM_WORLD_SIZE` > 1) whose processes did not join one group (e.g. no GPU and `use_cpu` unset: each
    trains its own copy), and `accelerate launch` asked for several CPU processes (`--cpu --num_processes N`, or
    `distributed_type: MULTI_CPU` without `mpirun_hostfile`), whose simple launcher starts one process only (it sets
    `MASTER_ADDR` for the processes it does not start).
    """
    environ = os.environ if environ is None else environ
    if args.world_size > 1:
        return None
    launched = max(int(environ.get(name, 1)) for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if launched > 1:
        return (
            f"This process was launched as one of {launched} but trains alone (world size 1): every process trains "
            "its own copy of the model. Without GPUs, set `use_cpu: true` in the config's `training:` section."
        )
    if environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in environ:
        return (
            "accelerate launch was asked for several CPU processes but started this one only: its CPU launcher "
            "(`--cpu`, or `distributed_type: MULTI_CPU` without an `mpirun_hostfile`) runs one process. Use "
            "`accelerate launch --config_file examples/configs/accelerate_cpu.yaml` or `torchrun --nproc_per_node N`."
        )
    return None


def mixture_stream(args: TrainingArguments) -> tuple[int, int]:
    """`(rank, world_size)` to build the training `SmolTolkMixture` with, for these arguments."""
    return (0, 1) if dispatches_batches(args) else (args.process_index, args.world_size)


class SmolTolkTrainer(Trainer):
    """A `Trainer` for `SmolTolkForCausalLM` with the paper's two-stage recipe (module docstring).

    Args:
        schedule: the two-stage learning-rate schedule (`TrainingArguments.learning_rate` is the base rate; the
            Trainer's `lr_scheduler_type` and warm-up arguments are not used).
        kwargs: as for `Trainer`. With a `SmolTolkMixture` as `train_dataset`, a `TwoStageCallback` is added
            and `ignore_data_skip` is set (the callback restores the data position on resume).
    """

    def __init__(self, *args: Any, schedule: TwoStageSchedule, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.args.n_gpu > 1:
            raise ValueError(
                f"SmolTolkTrainer does not run torch DataParallel ({self.args.n_gpu} GPUs in one process): its loss "
                "normalisation counts each process's batch. Launch one process per GPU (torchrun or accelerate "
                "launch), or make one GPU visible (CUDA_VISIBLE_DEVICES)."
            )
        warning = single_process_launch(self.args)
        if warning is not None:
            logger.warning(warning)
        self.schedule = schedule
        self.two_stage: TwoStageCallback | None = None
        if isinstance(self.train_dataset, SmolTolkMixture):
            if (self.train_dataset.rank, self.train_dataset.world_size) != mixture_stream(self.args):
                raise ValueError(
                    f"The mixture reads stream rank={self.train_dataset.rank} of {self.train_dataset.world_size}, "
                    f"but these arguments need {mixture_stream(self.args)} (dispatch_batches="
                    f"{dispatches_batches(self.args)}, {self.args.world_size} processes): see mixture_stream()."
                )
            self.args.ignore_data_skip = True
            self.two_stage = TwoStageCallback(schedule, self.train_dataset)
            self.add_callback(self.two_stage)
        self._frozen = False  # whether the stage-1 parameters have requires_grad=False now
        self._parts = torch.zeros(len(_PARTS), dtype=torch.float64, device=self.args.device)

    # ----- optimizer and schedule ------------------------------------------------------------------------------
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            model = self.model if model is None else model
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(parameter_groups(model, self.args.weight_decay), **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        if self.lr_scheduler is None:
            self.lr_scheduler = two_stage_scheduler(self.optimizer if optimizer is None else optimizer, self.schedule)
        return self.lr_scheduler

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """`Trainer.training_step` with the backbone frozen in stage 1 (module docstring, "Frozen backbone")."""
        stage1 = self.schedule.stage(self.state.global_step) == 1
        if model is self.model and (stage1 or self._frozen):  # bare model: no weight gradient for the frozen ones
            self._set_trainable(not stage1)
        loss = super().training_step(model, inputs, num_items_in_batch)
        if stage1:  # a wrapper's parameter set is fixed: drop the gradients (a no-op where requires_grad was off)
            for param in self._frozen_in_stage1():
                param.grad = None
        return loss

    def _frozen_in_stage1(self) -> Iterator[nn.Parameter]:
        """The parameters stage 1 freezes, read from the optimizer (whose parameters FSDP may have replaced by
        their shards)."""
        for group in self.optimizer.param_groups:
            if group["role"] in FROZEN_IN_STAGE1:
                yield from group["params"]

    def _set_trainable(self, trainable: bool) -> None:
        """Sets `requires_grad` of the parameters stage 1 freezes."""
        for param in self._frozen_in_stage1():
            param.requires_grad_(trainable)
        self._frozen = not trainable

    # ----- data ------------------------------------------------------------------------------------------------
    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list[dict[str, Any]], torch.Tensor | int | None]:
        """The micro-batches of one optimizer step, with the global loss counts (module docstring): returns the
        global number of scored targets as `num_items_in_batch` and adds the global number of selector positions
        to every micro-batch as `num_positions_in_batch`."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if num_items_in_batch is None:  # the Trainer averages per micro-batch: so does the model's default
            return batch_samples, num_items_in_batch
        config = self.model.config
        counts = sum(loss_normalizers(config, b["labels"], b.get("attention_mask")) for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        for batch in batch_samples:
            batch["num_positions_in_batch"] = counts[1]
        return batch_samples, counts[0]

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        dataloader = super().get_train_dataloader()
        shard = getattr(dataloader, "dataset", None)
        if isinstance(shard, IterableDatasetShard) and getattr(shard.dataset, "world_size", 1) > 1:
            shard.num_processes, shard.process_index = 1, 0  # the mixture already reads this rank's stream
        return dataloader

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """`Trainer.train`; a resumed run also restores the data position and tokens seen (`TwoStageCallback`).

        `resume_from_checkpoint=True` takes the newest complete checkpoint of `output_dir` (see `checkpoints`),
        passing over, with a warning, newer ones that were interrupted while being written; a checkpoint given by
        path must be complete.
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = self._newest_checkpoint()
        elif resume_from_checkpoint and self.two_stage is not None and not is_complete(resume_from_checkpoint):
            newest, _ = last_complete_checkpoint(os.path.dirname(os.path.normpath(resume_from_checkpoint)))
            raise ValueError(
                f"Cannot resume from {resume_from_checkpoint}: it has no {STATE_NAME}, which a SmolTolk run writes "
                "last, so it was interrupted while being written (or is not a SmolTolk checkpoint). "
                + (f"Resume from {newest}, the newest complete one." if newest else "No complete one is next to it.")
            )
        if self.two_stage is not None:
            self.two_stage.resume_from = resume_from_checkpoint or None
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            if self._frozen:  # a run that ends (or fails) in stage 1 hands back a trainable model
                self._set_trainable(True)

    def _newest_checkpoint(self) -> str:
        """The checkpoint a resume without a path takes: the newest complete one of `output_dir`."""
        if self.two_stage is None:  # no completion marker without the SmolTolk callback
            found, skipped = get_last_checkpoint(self.args.output_dir), []
        else:
            found, skipped = last_complete_checkpoint(self.args.output_dir)
        if skipped:
            logger.warning(
                f"Passing over {len(skipped)} incomplete checkpoint(s), interrupted while being written: "
                f"{', '.join(skipped)}."
            )
        if found is None:
            raise ValueError(f"No complete checkpoint to resume from in {self.args.output_dir}.")
        logger.warning(f"Resuming from {found}, the newest complete checkpoint.")
        return found

    # ----- logging ---------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        if self.args.torch_compile:  # the compiled forward skips the checks that read values: run them here
            self.accelerator.unwrap_model(model, keep_torch_compile=False).check_inputs(
                inputs["input_ids"], labels=inputs.get("labels"), attention_mask=inputs.get("attention_mask")
            )
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training and outputs.get("text_loss") is not None:
            entropy = outputs.get("layer_weights_entropy")
            positions = 0
            if entropy is not None:
                positions = loss_normalizers(self.model.config, inputs["labels"], inputs.get("attention_mask"))[1]
            parts = (
                outputs["text_loss"] * outputs["num_text_targets"],
                outputs["num_text_targets"],
                outputs["speech_loss"] * outputs["num_speech_targets"],
                outputs["num_speech_targets"],
                0.0 if entropy is None else entropy * positions,
                positions,
            )
            self._parts += torch.stack(
                [torch.as_tensor(p, dtype=torch.float64, device=self._parts.device) for p in parts]
            )
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: add the loss parts accumulated since the last one
            text_sum, text_n, speech_sum, speech_n, entropy_sum, entropy_n = self.accelerator.reduce(
                self._parts, reduction="sum"
            ).tolist()
            self._parts.zero_()
            # A modality without targets since the last log has no loss to report (0 would read as a perfect fit).
            if text_n:
                logs["text_loss"] = text_sum / text_n
            if speech_n:
                logs["speech_loss"] = speech_sum / speech_n
            if entropy_n:
                logs["layer_weights_entropy"] = entropy_sum / entropy_n
            if self.two_stage is not None:
                self.two_stage.tokens_seen["text"] += int(text_n)
                self.two_stage.tokens_seen["speech"] += int(speech_n)
                logs["text_tokens_seen"] = self.two_stage.tokens_seen["text"]
                logs["speech_tokens_seen"] = self.two_stage.tokens_seen["speech"]
            step = self.state.global_step - 1  # the step just taken
            logs["stage"] = self.schedule.stage(step)
            for role in ROLES:  # the Trainer's `learning_rate` is the first group's only
                logs[f"learning_rate_{role}"] = self.args.learning_rate * self.schedule.lr_factor(role, step)
        super().log(logs, start_time)
