"""`smoltolk train CONFIG [--resume [CHECKPOINT]]`: two-stage SmolTolk training from one YAML file.

The file has four sections (`examples/configs/` has one per paper size and a tiny CPU one; `docs/training.md`
describes every key):

```yaml
model:            # exactly one of from_text_model / from_pretrained / preset
  from_text_model: HuggingFaceTB/SmolLM-135M   # a Llama-architecture text LM (path, Hub id or "embedded")
  preset: smoltolk-150m     # with from_text_model: that preset's speech settings (adapters, pooling, beta, RoPE)
  num_speech_units: 500
  overrides: {}             # any SmolTolkConfig field
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
import os
import sys
from typing import Any

import datasets
import torch
import yaml
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
from .optim import TwoStageSchedule
from .trainer import SmolTolkTrainer, dispatches_batches, mixture_stream

logger = logging.get_logger(__name__)

SECTIONS = ("model", "data", "stages", "training")
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
    "rope_parameters",
)
_PRESET_BACKBONE_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads")


def load_config(config: str | os.PathLike | dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Reads a training YAML (or takes a dict of the same shape) and checks its sections."""
    if not isinstance(config, dict):
        with open(config) as f:
            config = yaml.safe_load(f) or {}
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ValueError(f"Unknown config section(s) {sorted(unknown)}; expected {list(SECTIONS)}.")
    for section in ("model", "data", "training"):
        if not isinstance(config.get(section), dict):
            raise TypeError(f"The config needs a `{section}:` section (a mapping).")
    return {section: dict(config.get(section) or {}) for section in SECTIONS}


def training_arguments(training: dict[str, Any]) -> TrainingArguments:
    """`TrainingArguments` from the paper's recipe updated with `training`; needs `output_dir` and `max_steps`."""
    kwargs = {**RECIPE, **training}
    if kwargs.get("max_steps", -1) <= 0:
        raise ValueError("training.max_steps must be set (> 0): the mixture is an endless stream.")
    if kwargs["bf16"] == "auto":
        kwargs["bf16"] = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    kwargs.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    return TrainingArguments(**kwargs)


def build_model(spec: dict[str, Any]) -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    """The model and processor of a `model:` section (see the module docstring): the text tokenizer (`tokenizer:`,
    else the source model's), the speech tokenizer (`speech_tokenizer:`, a `SpeechTokenizer` folder; else the one of
    a `from_pretrained` folder's processor, if any) and the model's id layout. The Trainer saves it with the model
    in every checkpoint and in `output_dir`."""
    spec = dict(spec)
    tokenizer_path = spec.pop("tokenizer", None)
    speech_tokenizer_path = spec.pop("speech_tokenizer", None)
    attn = {"attn_implementation": spec.pop("attn_implementation")} if "attn_implementation" in spec else {}
    num_units, overrides, preset = (
        spec.pop("num_speech_units", 500),
        spec.pop("overrides", {}),
        spec.pop("preset", None),
    )
    sources = {key: spec.pop(key) for key in ("from_text_model", "from_pretrained") if key in spec}
    if spec:
        raise ValueError(f"Unknown model key(s) {sorted(spec)}.")
    if len(sources) > 1 or not (sources or preset):
        raise ValueError("model: give exactly one of from_text_model, from_pretrained or preset.")

    if "from_pretrained" in sources:
        model = SmolTolkForCausalLM.from_pretrained(sources["from_pretrained"], **attn)
        tokenizer_path = tokenizer_path or sources["from_pretrained"]
        tokenizer = None
    elif "from_text_model" in sources:
        source = sources["from_text_model"]
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
    if speech_tokenizer_path is not None:
        speech_tokenizer = SpeechTokenizer.from_pretrained(speech_tokenizer_path)
    elif "from_pretrained" in sources:
        source = sources["from_pretrained"]
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


def load_dataset_spec(spec: str | dict[str, Any]) -> datasets.Dataset:
    """A dataset from `path` (a `save_to_disk` folder, or anything `datasets.load_dataset` takes with `name`,
    `split` (default "train") and `data_files`)."""
    spec = {"path": spec} if isinstance(spec, str) else spec
    path, split = os.fspath(spec["path"]), spec.get("split", "train")
    if os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json")
    ):
        dataset = datasets.load_from_disk(path)
        return dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    return datasets.load_dataset(path, name=spec.get("name"), split=split, data_files=spec.get("data_files"))


def build_mixture(
    data: dict[str, Any],
    config: SmolTolkConfig,
    tokenizer: PreTrainedTokenizerBase | None,
    args: TrainingArguments,
    stage1_steps: int,
) -> SmolTolkMixture:
    """The training mixture of a `data:` section, for this process (`mixture_stream`) and this batch geometry.

    Errors from the sample builders (a missing column, an empty dataset, a context too short) name the
    dataset they come from.
    """
    data = dict(data)
    context_length = data.pop("context_length", 2048)
    seed = data.pop("seed", 0)
    run_lengths = {key: tuple(data.pop(key)) for key in ("text_words", "speech_words") if key in data}
    specs = {modality: data.pop(modality, None) or [] for modality in ("speech", "text", "interleaved")}
    if data:
        raise ValueError(f"Unknown data key(s) {sorted(data)}.")

    def builder(modality: str, spec: str | dict[str, Any]) -> PackedSampleBuilder:
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
            where = f"data.{modality}[{index}] ({spec['path'] if isinstance(spec, dict) else spec})"
            try:
                builders[modality].append(builder(modality, spec))
            except (ValueError, FileNotFoundError) as error:
                raise ValueError(f"{where}: {error}") from error
        entry_weights = [spec.get("weight") if isinstance(spec, dict) else None for spec in entries]
        if any(w is not None for w in entry_weights):
            weights[modality] = [b.size if w is None else w for w, b in zip(entry_weights, builders[modality])]

    rank, world_size = mixture_stream(args)
    # The DataLoader of a dispatching process loads the micro-batches of all processes at once.
    loader_batch = args.train_batch_size * (args.world_size if dispatches_batches(args) else 1)
    return SmolTolkMixture(
        **builders,
        weights=weights,
        seed=seed,
        stage1_samples=stage1_steps * total_train_batch_size(args),
        rank=rank,
        world_size=world_size,
        worker_batch_size=loader_batch,
    )


def build_trainer(config: str | os.PathLike | dict[str, Any]) -> SmolTolkTrainer:
    """A ready `SmolTolkTrainer` for a training config (YAML path or dict)."""
    config = load_config(config)
    args = training_arguments(config["training"])
    schedule = TwoStageSchedule(**config["stages"])
    set_seed(args.seed)  # the fresh speech parameters are initialised here, before the Trainer seeds
    model, processor = build_model(config["model"])
    mixture = build_mixture(config["data"], model.config, processor.tokenizer, args, schedule.stage1_steps)
    return SmolTolkTrainer(
        model=model,
        args=args,
        train_dataset=mixture,
        data_collator=SmolTolkDataCollator(model.config),
        processing_class=processor,
        schedule=schedule,
    )


def run_training(
    config: str | os.PathLike | dict[str, Any], resume: str | bool = False, overwrite: bool = False
) -> SmolTolkTrainer:
    """Trains as configured (resuming from `resume`: a checkpoint folder, or True for the newest complete one in
    `output_dir`) and saves the final model and processor to `output_dir`.

    A new run (no `resume`) refuses an `output_dir` that holds another run's model or checkpoints unless
    `overwrite`, which deletes that run's checkpoints before training (see `checkpoints.check_output_dir`).
    """
    trainer = build_trainer(config)
    check_output_dir(trainer.args.output_dir, resume, overwrite)
    if overwrite and trainer.is_world_process_zero():
        for folder in remove_checkpoints(trainer.args.output_dir):
            logger.warning(f"--overwrite: deleted {folder} of the replaced run.")
    trainer.train(resume_from_checkpoint=resume or None)
    trainer.save_model()
    return trainer


def cli_train(argv: list[str] | None = None) -> int:
    """`smoltolk train CONFIG [--resume [CHECKPOINT]]`; configuration errors are reported in one line."""
    parser = argparse.ArgumentParser(prog="smoltolk train", description="Two-stage SmolTolk training (HF Trainer).")
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
    args = parser.parse_args(argv)
    try:
        run_training(args.config, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli_train())
