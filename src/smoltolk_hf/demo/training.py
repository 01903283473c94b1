"""The demo's training part: two-stage training of SmolTolk-150M on a tiny synthetic spoken corpus, on CPU.

1. synthesises word-aligned speech with espeak-ng (sentences from Debian fortunes), fits a 500-unit codebook
   with the MFCC stand-in front end and tokenizes the corpus into a unit dataset (held-out utterances apart);
2. writes a training YAML (`train.yaml`, runnable as `smoltolk train train.yaml`) for SmolTolk-150M on the
   embedded SmolLM2-135M backbone with interleaved, speech and fortune-text data;
3. measures the backbone's text loss on held-out text, trains stage 1 (backbone frozen) and stage 2 (everything)
   with `SmolTolkTrainer`, and measures SmolTolk's held-out text and speech losses before and after;
4. saves the model and a `SmolTolkProcessor` (text + speech tokenizer) that `from_pretrained` loads.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import datasets
import numpy as np
import torch
import yaml

from ..backbones import load_embedded_backbone
from ..data.prepare import read_audio_source, tokenize_audio_dataset
from ..data.samples import SpeechSampleBuilder
from ..modeling_smoltolk import SmolTolkForCausalLM
from ..processing_smoltolk import SmolTolkProcessor
from ..tokenization_speech import MfccFrontEnd, SpeechTokenizer
from ..training.train import build_trainer
from .corpus import fortune_sentences, synthesize_corpus

NUM_UNITS = 500


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def _packed_text(tokenizer: Any, documents: list[str], context_length: int, count: int) -> torch.Tensor:
    """`count` rows of `context_length` ids: the documents tokenized, each closed by EOS, concatenated."""
    ids = [
        i
        for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]
        for i in ids + [tokenizer.eos_token_id]
    ]
    if len(ids) < count * context_length:
        raise ValueError(f"{len(ids)} held-out text tokens cannot fill {count} rows of {context_length}.")
    return torch.tensor(ids[: count * context_length]).view(count, context_length)


@torch.no_grad()
def heldout_losses(model: SmolTolkForCausalLM, text: torch.Tensor, speech: torch.Tensor) -> dict[str, float]:
    """SmolTolk's mean text loss on `text` rows and mean speech loss on `speech` rows (joint ids, no padding)."""
    model.eval()
    return {
        "text_loss": float(model(text, labels=text).text_loss),
        "speech_loss": float(model(speech, labels=speech).speech_loss),
    }


def run_demo_training(
    work_dir: str | os.PathLike,
    n_utterances: int = 120,
    heldout_utterances: int = 12,
    context_length: int = 256,
    batch_size: int = 2,
    stage1_steps: int = 10,
    stage2_steps: int = 14,
    eval_rows: int = 4,
    cache_dir: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs the training demo (module docstring) in `work_dir`; returns its measurements and paths.

    The defaults take a few minutes on 2 CPU cores. Returned keys: `backbone_text_loss`, `before` and `after`
    (held-out `text_loss`/`speech_loss`), `speech_loss_log` (the training logs' speech loss per step),
    `train_seconds`, and the paths `config`, `units`, `heldout_units`, `speech_tokenizer`, `processor`, `model`.
    """
    work_dir = os.path.abspath(os.fspath(work_dir))
    paths = {
        name: os.path.join(work_dir, name)
        for name in ("corpus", "speech_tokenizer", "units_all", "units", "heldout_units", "text", "run", "model")
    }
    paths["config"] = os.path.join(work_dir, "train.yaml")
    paths["processor"] = paths["model"]

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

    # Text: fortune sentences the spoken corpus does not use; the last ones are held out.
    spoken = "\n".join(units["text"])
    sentences = [s for s in fortune_sentences() if s not in spoken]
    random.Random(seed).shuffle(sentences)
    documents = [" ".join(sentences[i : i + 8]) for i in range(0, len(sentences), 8)]
    heldout_documents, train_documents = documents[:40], documents[40:]
    datasets.Dataset.from_dict({"text": train_documents}).save_to_disk(paths["text"])

    config = {
        "model": {"from_text_model": "embedded", "num_speech_units": NUM_UNITS, "attn_implementation": "sdpa"},
        "data": {
            "context_length": context_length,
            "seed": seed,
            "interleaved": [{"path": paths["units"]}],
            "speech": [{"path": paths["units"]}],
            "text": [{"path": paths["text"]}],
        },
        "stages": {"stage1_steps": stage1_steps, "warmup_steps": max(1, stage1_steps // 2)},
        "training": {
            "output_dir": paths["run"],
            "max_steps": stage1_steps + stage2_steps,
            "per_device_train_batch_size": batch_size,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": seed,
        },
    }
    with open(paths["config"], "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)

    _step("Held-out text loss of the backbone (SmolLM2-135M), before any speech training")
    backbone, tokenizer = load_embedded_backbone(cache_dir)
    text_rows = _packed_text(tokenizer, heldout_documents, context_length, eval_rows)
    with torch.no_grad():
        backbone_text_loss = float(backbone(text_rows, labels=text_rows).loss)
    del backbone
    print(f"backbone text loss: {backbone_text_loss:.3f}")

    _step(f"Building SmolTolk-150M and the data mixture from {paths['config']}")
    trainer = build_trainer(paths["config"])
    model = trainer.model
    heldout_builder = SpeechSampleBuilder(
        datasets.load_from_disk(paths["heldout_units"]), model.config, context_length
    )
    speech_rows = torch.stack(
        [heldout_builder.build(np.random.default_rng([seed, i]))["input_ids"] for i in range(eval_rows)]
    )
    before = heldout_losses(model, text_rows, speech_rows)
    print(f"held-out before training: {json.dumps(before)}")

    _step(
        f"Training: stage 1 ({stage1_steps} steps, backbone frozen, interleaved data), "
        f"stage 2 ({stage2_steps} steps, everything, full mixture)"
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    after = heldout_losses(model, text_rows, speech_rows)
    speech_log = [round(e["speech_loss"], 3) for e in trainer.state.log_history if "speech_loss" in e]
    print(f"held-out after training:  {json.dumps(after)}  ({train_seconds:.0f} s of training)")
    print(f"speech loss per step: {speech_log}")

    _step(f"Saving the model and processor to {paths['model']} and reloading them with from_pretrained")
    trainer.save_model(paths["model"])
    SmolTolkProcessor.from_config(tokenizer, speech_tokenizer, model.config).save_pretrained(paths["processor"])
    reloaded = SmolTolkForCausalLM.from_pretrained(paths["model"])
    reloaded_losses = heldout_losses(reloaded, text_rows, speech_rows)
    if reloaded_losses != after:
        raise RuntimeError(f"The reloaded model scores differently: {reloaded_losses} vs {after}.")
    SmolTolkProcessor.from_pretrained(paths["processor"])
    print(f"reloaded: same held-out losses ({json.dumps(reloaded_losses)})")
    return {
        "backbone_text_loss": backbone_text_loss,
        "before": before,
        "after": after,
        "speech_loss_log": speech_log,
        "train_seconds": train_seconds,
        **{
            name: paths[name]
            for name in ("config", "units", "heldout_units", "speech_tokenizer", "processor", "model")
        },
    }
