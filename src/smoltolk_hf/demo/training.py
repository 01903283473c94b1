"""The demo's training part: two-stage training of SmolTolk-150M on a tiny synthetic spoken corpus, on CPU.

1. synthesises word-aligned speech with espeak-ng (sentences from Debian fortunes), fits a 500-unit codebook
   with the MFCC stand-in front end and tokenizes the corpus into a unit dataset (held-out utterances apart);
2. writes a training YAML (`train.yaml`, runnable as `smoltolk train train.yaml`) for SmolTolk-150M on the
   embedded SmolLM2-135M backbone with interleaved, speech and fortune-text data;
3. measures, before and after training stage 1 (backbone frozen) and stage 2 (everything) with `SmolTolkTrainer`,
   what shows learning (`measure`): the held-out speech NLL (the training loss on held-out utterances) beside the
   unigram entropy of the training units, the selector's state on held-out speech, and the held-out text check
   (before training SmolTolk scores exactly as its backbone on text);
4. saves the model and a `SmolTolkProcessor` (text + speech tokenizer) that `from_pretrained` loads.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import datasets
import yaml

from ..data.prepare import read_audio_source, tokenize_audio_dataset
from ..evaluation.nll import speech_nll
from ..evaluation.segmentation import layer_weights
from ..modeling_smoltolk import SmolTolkForCausalLM
from ..processing_smoltolk import SmolTolkProcessor
from ..tokenization_speech import MfccFrontEnd, SpeechTokenizer
from ..training.train import build_trainer
from .corpus import fortune_sentences, synthesize_corpus
from .metrics import format_selector_state, selector_state, unigram_cross_entropy
from .text_check import text_check

NUM_UNITS = 500


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def measure(
    model: SmolTolkForCausalLM,
    processor: SmolTolkProcessor,
    heldout_units: list,
    context_length: int,
    text: dict | None = None,
) -> dict:
    """Held-out speech NLL (packed windows of `context_length`, as the training loss), the selector's state on the
    held-out utterances (None for a model without selector, e.g. baseline-135m) and the held-out text check (`text`
    when given: a result already measured on the same text path)."""
    nll = speech_nll(model.eval(), processor, heldout_units, max_length=context_length, mode="packed")
    has_selector = model.config.use_dynamic_pooling
    return {
        "speech_nll": nll["nll"],
        "selector": selector_state(layer_weights(model, processor, heldout_units)) if has_selector else None,
        "text_check": text or text_check(model, processor),
    }


def report(when: str, measured: dict, unigram: float) -> None:
    """Prints `measure`'s result beside the unigram entropy."""
    check = measured["text_check"]
    lines = [f"{when}: held-out speech NLL {measured['speech_nll']:.3f} per unit (unigram entropy {unigram:.3f})"]
    if measured["selector"] is not None:
        lines.append(f"  selector on held-out speech: {format_selector_state(measured['selector'])}")
    lines.append(
        f"  text check: {100 * check['accuracy']:.1f}% of {check['num_pairs']} stories, margin "
        f"{check['mean_margin']:.3f}, ending NLL {check['ending_nll']:.3f}"
    )
    print("\n".join(lines), flush=True)


def prepare_data(work_dir: str | os.PathLike, n_utterances: int, heldout_utterances: int, seed: int = 0) -> dict:
    """The demo's data in `work_dir`: an espeak-ng corpus of `n_utterances`, a 500-unit MFCC codebook fitted on the
    training utterances, the units datasets (`units`: training, `heldout_units`: the last `heldout_utterances`) and
    the fortune text documents (`text`). Returns the paths (keys `corpus`, `speech_tokenizer`, `units_all`,
    `units`, `heldout_units`, `text`)."""
    work_dir = os.path.abspath(os.fspath(work_dir))
    paths = {
        name: os.path.join(work_dir, name)
        for name in ("corpus", "speech_tokenizer", "units_all", "units", "heldout_units", "text")
    }
    _step(f"Synthesising {n_utterances} spoken utterances with espeak-ng (word-aligned)")
    manifest = synthesize_corpus(paths["corpus"], n_utterances, seed=seed)

    _step(f"Fitting a {NUM_UNITS}-unit codebook on MFCC features (the offline stand-in for HuBERT) and tokenizing")
    rows = read_audio_source(manifest)
    speech_tokenizer = SpeechTokenizer.train(
        [row["audio"] for row in rows[:-heldout_utterances]], NUM_UNITS, MfccFrontEnd(), seed=seed
    )
    speech_tokenizer.save_pretrained(paths["speech_tokenizer"])
    units = tokenize_audio_dataset(manifest, paths["units_all"], speech_tokenizer)
    train_count = len(units) - heldout_utterances
    units.select(range(train_count)).save_to_disk(paths["units"])
    units.select(range(train_count, len(units))).save_to_disk(paths["heldout_units"])

    # Text: fortune sentences the spoken corpus does not use (the text check's stories are held out from both).
    spoken = "\n".join(units["text"])
    sentences = [s for s in fortune_sentences() if s not in spoken]
    random.Random(seed).shuffle(sentences)
    documents = [" ".join(sentences[i : i + 8]) for i in range(0, len(sentences), 8)]
    datasets.Dataset.from_dict({"text": documents}).save_to_disk(paths["text"])
    return paths


def training_config(
    data: dict,
    output_dir: str,
    context_length: int,
    batch_size: int,
    stage1_steps: int,
    stage2_steps: int,
    seed: int = 0,
    preset: str | None = None,
) -> dict[str, Any]:
    """The training config (`smoltolk train` YAML as a dict) of the demo's model on `prepare_data`'s `data`:
    SmolTolk from the embedded backbone (with a `preset`'s speech settings if given), interleaved, speech and
    fortune-text data, stage 1 then stage 2."""
    model = {
        "from_text_model": "embedded",
        "num_speech_units": NUM_UNITS,
        "attn_implementation": "sdpa",
        "speech_tokenizer": data["speech_tokenizer"],
    }
    if preset is not None:
        model["preset"] = preset
    return {
        "model": model,
        "data": {
            "context_length": context_length,
            "seed": seed,
            "interleaved": [{"path": data["units"]}],
            "speech": [{"path": data["units"]}],
            "text": [{"path": data["text"]}],
        },
        # Stage 1 warms up over its first 10% as the paper's (100 of 1000 steps); the speech peak and the stage-2
        # backbone rate follow the square-root batch rules (docs/training.md); stage 2 warms up.
        "stages": {
            "stage1_steps": stage1_steps,
            "warmup_steps": max(1, stage1_steps // 10),
            "stage2_warmup_steps": max(1, stage2_steps // 4),
        },
        "training": {
            "output_dir": output_dir,
            "max_steps": stage1_steps + stage2_steps,
            "per_device_train_batch_size": batch_size,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": seed,
        },
    }


def run_demo_training(
    work_dir: str | os.PathLike,
    n_utterances: int = 120,
    heldout_utterances: int = 12,
    context_length: int = 128,
    batch_size: int = 2,
    stage1_steps: int = 300,
    stage2_steps: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs the training demo (module docstring) in `work_dir`; returns its measurements and paths.

    The defaults take a few minutes on 2 CPU cores. Returned keys: `unigram_entropy` (of the training units, on
    the held-out ones), `before` and `after` (`measure`'s `speech_nll`, `selector`, `text_check`), `speech_loss_log`
    (the training logs' speech loss per step), `train_seconds`, and the paths `config`, `units`, `heldout_units`,
    `speech_tokenizer`, `processor`, `model`.
    """
    work_dir = os.path.abspath(os.fspath(work_dir))
    paths = prepare_data(work_dir, n_utterances, heldout_utterances, seed)
    paths.update(config=os.path.join(work_dir, "train.yaml"), model=os.path.join(work_dir, "model"))
    paths["processor"] = paths["model"]
    config = training_config(
        paths, os.path.join(work_dir, "run"), context_length, batch_size, stage1_steps, stage2_steps, seed
    )
    with open(paths["config"], "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)

    _step(f"Building SmolTolk-150M and the data mixture from {paths['config']}")
    trainer = build_trainer(paths["config"])
    model, processor = trainer.model, trainer.processing_class
    heldout_units = datasets.load_from_disk(paths["heldout_units"])["units"]
    unigram = unigram_cross_entropy(datasets.load_from_disk(paths["units"])["units"], heldout_units, NUM_UNITS)
    _step("Before training (SmolTolk on text = its backbone): held-out speech NLL, selector, text check")
    before = measure(model, processor, heldout_units, context_length)
    report("before training", before, unigram)

    _step(
        f"Training: stage 1 ({stage1_steps} steps, backbone frozen, interleaved data), "
        f"stage 2 ({stage2_steps} steps, everything, full mixture)"
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    speech_log = [round(e["speech_loss"], 3) for e in trainer.state.log_history if "speech_loss" in e]
    print(f"{train_seconds:.0f} s of training; speech loss per step: {speech_log}")
    _step("After training: held-out speech NLL, selector, text check")
    after = measure(model, processor, heldout_units, context_length)
    report("after training", after, unigram)

    _step(f"Saving the model and processor to {paths['model']} and reloading them with from_pretrained")
    trainer.save_model(paths["model"])
    processor.save_pretrained(paths["processor"])
    reloaded = SmolTolkForCausalLM.from_pretrained(paths["model"])
    reloaded_nll = speech_nll(reloaded, processor, heldout_units, max_length=context_length, mode="packed")["nll"]
    if reloaded_nll != after["speech_nll"]:
        raise RuntimeError(
            f"The reloaded model scores differently: speech NLL {reloaded_nll} vs {after['speech_nll']}."
        )
    SmolTolkProcessor.from_pretrained(paths["processor"])
    print(f"reloaded: same held-out speech NLL ({reloaded_nll:.4f})")
    return {
        "unigram_entropy": unigram,
        "before": before,
        "after": after,
        "speech_loss_log": speech_log,
        "train_seconds": train_seconds,
        **{
            name: paths[name]
            for name in ("config", "units", "heldout_units", "speech_tokenizer", "processor", "model")
        },
    }
