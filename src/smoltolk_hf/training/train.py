"""`smoltolk train CONFIG [--resume [CHECKPOINT]] [--overwrite] [--SECTION.FIELD VALUE ...]`: two-stage SmolTolk
training from one YAML file.

The file has four sections, read into the dataclasses of `training.config` (`examples/configs/` has one per paper
size and a tiny CPU one; `docs/training.md` describes every key). An unknown key anywhere is an error that names
the closest valid one, and every field can be overridden on the command line, e.g. `--training.learning_rate 1e-4`:

```yaml
model:            # exactly one of from_text_model / from_pretrained / preset
  from_text_model: HuggingFaceTB/SmolLM-135M   # a Llama-architecture text LM (path, Hub id or "embedded")
  preset: smoltolk-150m     # with from_text_model: that preset's speech settings (adapters, pooling, beta, RoPE)
  num_speech_units: 500
  overrides: {}             # any SmolTolkConfig field (checked)
  speech_tokenizer: PATH    # optional: a SpeechTokenizer folder, saved in the run's processor
data:
  context_length: 2048
  interleaved: [{path: units/libriheavy}]        # unit datasets (smoltolk tokenize), on disk
  speech: [{path: units/librilight}]
  text: [{path: HuggingFaceTB/smollm-corpus, name: fineweb-edu-dedup, weight: 0.7}]
stages: {stage1_steps: 1000, warmup_steps: 100, peak_factor: 10, decay_fraction: 0.2}
training:         # HF TrainingArguments, on top of the paper's recipe (RECIPE)
  output_dir: runs/smoltolk-150m
  max_steps: 16000
```

The same command runs on one process or under `torchrun` / `accelerate launch` (see `SmolTolkTrainer` for how
the data is split across processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

import datasets
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase, TrainingArguments, set_seed
from transformers.utils import logging

from ..configuration_smoltolk import SmolTolkConfig
from ..data.collator import SmolTolkDataCollator
from ..data.mixture import SmolTolkMixture
from ..data.samples import InterleavedSampleBuilder, PackedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder
from ..modeling_smoltolk import SmolTolkForCausalLM
from ..processing_smoltolk import PROCESSOR_CONFIG_NAME, SmolTolkProcessor
from ..tokenization_speech import SpeechTokenizer
from .callback import total_train_batch_size
from .checkpoints import check_output_dir, remove_checkpoints
from .config import DataSection, DatasetEntry, ModelSection, TrainConfig, load_config, parse_overrides
from .optim import sqrt_batch_factor, stage1_peak_factor
from .trainer import SmolTolkTrainer, dispatches_batches, mixture_stream

logger = logging.get_logger(__name__)

# Paper section 4.1 and appendix A; `training` entries override them. bf16 "auto": where the hardware has it.
RECIPE: dict[str, Any] = {
    "learning_rate": 3e-4,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "weight_decay": 0.1,
    "max_grad_norm": 1.0,
    "bf16": "auto",
    "include_num_input_tokens_seen": "all",
    "accelerator_config": {"dispatch_batches": False},  # each process builds its own samples (SmolTolkTrainer)
    "ddp_find_unused_parameters": False,  # every parameter takes part in every forward (all tables, all positions)
    "logging_steps": 10,
    "report_to": "none",
}
# Speech-side fields a preset sets on top of a text model's backbone fields.
_PRESET_SPEECH_FIELDS = (
    "num_input_adapter_layers",
    "num_output_adapter_layers",
    "use_layer_pooling",
    "use_dynamic_pooling",
    "use_speech_residual",
    "entropy_beta",
    "pooling_norm",
    "speech_embedding_scale",
    "rope_parameters",
)
_PRESET_BACKBONE_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")


def training_arguments(training: dict[str, Any]) -> TrainingArguments:
    """`TrainingArguments` from the paper's recipe updated with `training`; needs `output_dir` and `max_steps`."""
    kwargs = {**RECIPE, **training}
    if kwargs.get("max_steps", -1) <= 0:
        raise ValueError("training.max_steps must be set (> 0): the mixture is an endless stream.")
    if kwargs["bf16"] == "auto":
        kwargs["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    kwargs.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    return TrainingArguments(**kwargs)


def build_model(spec: ModelSection) -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    """The model and processor of a `model:` section (see the module docstring): the text tokenizer (`tokenizer:`,
    else the source model's), the speech tokenizer (`speech_tokenizer:`, a `SpeechTokenizer` folder; else the one of
    a `from_pretrained` folder's processor, if any) and the model's id layout. The Trainer saves it with the model
    in every checkpoint and in `output_dir`."""
    tokenizer_path, preset, overrides = spec.tokenizer, spec.preset, dict(spec.overrides)
    attn = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
    num_units = 500 if spec.num_speech_units is None else spec.num_speech_units

    if spec.from_pretrained:
        model = SmolTolkForCausalLM.from_pretrained(spec.from_pretrained, **attn, **overrides)
        tokenizer_path = tokenizer_path or spec.from_pretrained
        tokenizer = None
    elif spec.from_text_model:
        source = spec.from_text_model
        if source == "embedded":
            from ..backbones import load_embedded_backbone

            text_model, tokenizer = load_embedded_backbone()
            text_model.config._attn_implementation = attn.get("attn_implementation", "sdpa")
        else:
            text_model, tokenizer = LlamaForCausalLM.from_pretrained(source, **attn), None
            tokenizer_path = tokenizer_path or source
        if preset:
            overrides = {**_preset_speech_settings(preset, text_model.config), **overrides}
        model = SmolTolkForCausalLM.from_text_model(text_model, num_speech_units=num_units, **overrides)
    else:
        if tokenizer_path is None:
            raise ValueError("model: a preset trained from scratch needs `tokenizer:` (a text tokenizer path).")
        config = SmolTolkConfig.from_preset(preset, num_speech_units=num_units, **overrides)
        if attn:
            config._attn_implementation = attn["attn_implementation"]
        model, tokenizer = SmolTolkForCausalLM(config), None
    if tokenizer_path == "embedded":
        from ..backbones import embedded_backbone_path

        tokenizer_path = embedded_backbone_path()
    if tokenizer_path is not None:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    speech_tokenizer = None
    if spec.speech_tokenizer is not None:
        speech_tokenizer = SpeechTokenizer.from_pretrained(spec.speech_tokenizer)
    elif spec.from_pretrained:
        source = spec.from_pretrained
        if os.path.isfile(os.path.join(source, PROCESSOR_CONFIG_NAME)):  # a run's folder: keep its speech tokenizer
            speech_tokenizer = SmolTolkProcessor.from_pretrained(source).speech_tokenizer
    return model, SmolTolkProcessor.from_config(tokenizer, speech_tokenizer, model.config)


def _preset_speech_settings(preset: str, text_config: Any) -> dict[str, Any]:
    """A preset's speech-side fields, after checking that the text model is that preset's backbone."""
    preset_config = SmolTolkConfig.from_preset(preset)
    mismatched = {
        field: (getattr(text_config, field), getattr(preset_config, field))
        for field in _PRESET_BACKBONE_FIELDS
        if getattr(text_config, field) != getattr(preset_config, field)
    }
    if mismatched:
        raise ValueError(
            f"The text model is not the backbone of preset {preset!r} (text model, preset): {mismatched}."
        )
    return {field: getattr(preset_config, field) for field in _PRESET_SPEECH_FIELDS}


def load_dataset_spec(spec: DatasetEntry) -> datasets.Dataset:
    """The dataset of a data entry: a `save_to_disk` folder, or anything `datasets.load_dataset` takes."""
    path, split = os.fspath(spec.path), spec.split
    if os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json")
    ):
        dataset = datasets.load_from_disk(path)
        return dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    return datasets.load_dataset(path, name=spec.name, split=split, data_files=spec.data_files)


def build_mixture(
    data: DataSection,
    config: SmolTolkConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    args: TrainingArguments,
    stage1_steps: int,
) -> SmolTolkMixture:
    """The training mixture of a `data:` section, for this process (`mixture_stream`) and this batch geometry.

    Errors from the sample builders (a missing column, an empty dataset, a context too short) name the
    dataset they come from.
    """
    context_length = data.context_length
    run_lengths = {
        key: tuple(getattr(data, key)) for key in ("text_words", "speech_words") if getattr(data, key) is not None
    }
    specs = {modality: getattr(data, modality) for modality in ("speech", "text", "interleaved")}

    def builder(modality: str, spec: DatasetEntry) -> PackedSampleBuilder:
        dataset = load_dataset_spec(spec)
        if modality == "speech":
            return SpeechSampleBuilder(dataset, config, context_length)
        if modality == "text":
            return TextSampleBuilder(dataset, config, tokenizer, context_length)
        return InterleavedSampleBuilder(dataset, config, tokenizer, context_length, **run_lengths)

    builders, weights = {}, {}
    for modality, entries in specs.items():
        builders[modality] = []
        for index, spec in enumerate(entries):
            where = f"data.{modality}.{index} ({spec.path})"
            try:
                builders[modality].append(builder(modality, spec))
            except (ValueError, FileNotFoundError) as error:
                raise ValueError(f"{where}: {error}") from error
        entry_weights = [spec.weight for spec in entries]
        if any(w is not None for w in entry_weights):
            weights[modality] = [b.size if w is None else w for w, b in zip(entry_weights, builders[modality])]

    rank, world_size = mixture_stream(args)
    # The DataLoader of a dispatching process loads the micro-batches of all processes at once.
    loader_batch = args.train_batch_size * (args.world_size if dispatches_batches(args) else 1)
    return SmolTolkMixture(
        **builders,
        weights=weights,
        seed=data.seed,
        stage1_samples=stage1_steps * total_train_batch_size(args),
        rank=rank,
        world_size=world_size,
        worker_batch_size=loader_batch,
    )


def build_trainer(
    config: str | os.PathLike | dict[str, Any] | TrainConfig, overrides: Sequence[tuple[str, Any]] = ()
) -> SmolTolkTrainer:
    """A ready `SmolTolkTrainer` for a training config (YAML path, dict or `TrainConfig`) with `overrides`
    (`(dotted key, value)` pairs, see `training.config`)."""
    config = load_config(config, overrides)
    args = training_arguments(config.training)
    schedule = config.stages
    tokens_per_step = config.data.context_length * total_train_batch_size(args)
    if schedule.backbone_factor is None:
        schedule = dataclasses.replace(schedule, backbone_factor=sqrt_batch_factor(tokens_per_step))
        logger.info(
            "Stage 2 backbone learning rate: %.3g x the base rate (square-root rule, %d tokens per optimizer step).",
            schedule.backbone_factor,
            tokens_per_step,
        )
    if schedule.peak_factor is None:
        schedule = dataclasses.replace(schedule, peak_factor=stage1_peak_factor(tokens_per_step))
        logger.info(
            "Stage 1 speech peak learning rate: %.3g x the base rate (square-root rule floored at 1, %d tokens per "
            "optimizer step).",
            schedule.peak_factor,
            tokens_per_step,
        )
    set_seed(args.seed)  # the fresh speech parameters are initialised here, before the Trainer seeds
    model, processor = build_model(config.model)
    mixture = build_mixture(config.data, model.config, processor.tokenizer, args, schedule.stage1_steps)
    return SmolTolkTrainer(
        model=model,
        args=args,
        train_dataset=mixture,
        data_collator=SmolTolkDataCollator(model.config),
        processing_class=processor,
        schedule=schedule,
    )


def run_training(
    config: str | os.PathLike | dict[str, Any] | TrainConfig,
    resume: str | bool = False,
    overwrite: bool = False,
    overrides: Sequence[tuple[str, Any]] = (),
) -> SmolTolkTrainer:
    """Trains as configured (resuming from `resume`: a checkpoint folder, or True for the newest complete one in
    `output_dir`) and saves the final model and processor to `output_dir`.

    A new run (no `resume`) refuses an `output_dir` that holds another run's model or checkpoints unless
    `overwrite`, which deletes that run's checkpoints before training (see `checkpoints.check_output_dir`).
    """
    config = load_config(config, overrides)
    # Checked before the model and data are built, so that a refused run costs nothing.
    check_output_dir(training_arguments(config.training).output_dir, resume, overwrite)
    trainer = build_trainer(config)
    if overwrite and trainer.is_world_process_zero():
        for folder in remove_checkpoints(trainer.args.output_dir):
            logger.warning(f"--overwrite: deleted {folder} of the replaced run.")
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model()
    return trainer


def cli_train(argv: list[str] | None = None) -> int:
    """`smoltolk train CONFIG [--resume [CHECKPOINT]] [--overwrite] [--SECTION.FIELD VALUE ...]`; configuration
    errors are reported in one line."""
    parser = argparse.ArgumentParser(
        prog="smoltolk train",
        usage="%(prog)s CONFIG [--resume [CHECKPOINT]] [--overwrite] [--SECTION.FIELD VALUE ...]",
        description="Two-stage SmolTolk training (HF Trainer).",
        epilog="Any field of the YAML can be overridden: --SECTION.FIELD VALUE or --SECTION.FIELD=VALUE, dots for "
        "nested keys and list indexes, values read as YAML. Examples: --training.learning_rate 1e-4 "
        "--training.output_dir runs/lr1e-4 --model.overrides.entropy_beta 0.01 --data.text.0.weight 0.5. "
        "Unknown keys are an error that names the closest valid one.",
    )
    parser.add_argument("config", help="training YAML (sections model, data, stages, training)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="resume from CHECKPOINT, or from the newest complete checkpoint in training.output_dir",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output_dir that holds another run (its checkpoints are deleted first)",
    )
    args, rest = parser.parse_known_args(argv)
    try:
        run_training(args.config, resume=args.resume, overwrite=args.overwrite, overrides=parse_overrides(rest))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_train())
