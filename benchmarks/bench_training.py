"""Does sample building keep up with training? Data throughput per core vs a SmolTolk-150M training step.

1. Sample building (one process, one thread): stage-1 samples (interleaved) and stage-2 mixture samples from
   pre-tokenized data, with `benchmarks/bench_data.py`'s synthetic datasets, in tokens/s per core.
2. Training (all threads of this machine): SmolTolk-150M (from the embedded SmolLM2-135M backbone when it is
   installed, else randomly initialised) trained by `SmolTolkTrainer` on the same data, timing every optimizer
   step of stage 1 (backbone frozen) and stage 2 (everything trained); the first step of each stage is a warm-up.

Prints a markdown table; the target is data building >= 20x what training consumes.

    python benchmarks/bench_training.py [--context-length 512] [--batch-size 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(__file__))
from bench_data import load_tokenizer, speech_dataset, text_datasets, throughput, word_stream

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.data.mixture import SmolTolkMixture
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder
from smoltolk_hf.modeling_smoltolk import SmolTolkForCausalLM
from smoltolk_hf.training import SmolTolkTrainer, TwoStageSchedule


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, clipping, AdamW, schedule)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def smoltolk_150m() -> tuple[SmolTolkForCausalLM, str]:
    try:
        from smoltolk_hf.backbones import load_embedded_backbone

        backbone, _ = load_embedded_backbone()
        backbone.config._attn_implementation = "sdpa"
        return SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500), "embedded SmolLM2-135M"
    except FileNotFoundError:
        config = SmolTolkConfig.from_preset("smoltolk-150m")
        config._attn_implementation = "sdpa"
        return SmolTolkForCausalLM(config), "random init"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps timed per stage (after a warm-up)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per data measurement")
    args = parser.parse_args()
    C, B = args.context_length, args.batch_size

    tokenizer, words, rng = load_tokenizer(), word_stream(), np.random.default_rng(0)
    model, source = smoltolk_150m()
    speech = speech_dataset(rng, 2000, words)
    _, tokenized_text = text_datasets(rng, 2000, words, tokenizer)
    builders = {
        "speech": [SpeechSampleBuilder(speech, model.config, C)],
        "text": [TextSampleBuilder(tokenized_text, model.config, tokenizer, C)],
        "interleaved": [InterleavedSampleBuilder(speech, model.config, tokenizer, C)],
    }
    stage_steps = args.steps + 1
    mixture = SmolTolkMixture(**builders, stage1_samples=stage_steps * B, rank=0, world_size=1, worker_batch_size=B)

    torch.set_num_threads(1)
    data_rates = {
        "stage 1 (interleaved)": throughput(mixture.sample, C, args.seconds)[0] * C,
        "stage 2 (mixture)": throughput(lambda k: mixture.sample(stage_steps * B + k), C, args.seconds)[0] * C,
    }
    torch.set_num_threads(os.cpu_count())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir,
            max_steps=2 * stage_steps,
            per_device_train_batch_size=B,
            learning_rate=3e-4,
            adam_beta2=0.95,
            weight_decay=0.1,
            ignore_data_skip=True,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            logging_steps=1000,
        )
        trainer = SmolTolkTrainer(
            model=model,
            args=training_args,
            train_dataset=mixture,
            data_collator=SmolTolkDataCollator(model.config),
            schedule=TwoStageSchedule(stage1_steps=stage_steps, warmup_steps=1),
            callbacks=[timer],
        )
        trainer.train()
    step_seconds = {
        "stage 1 (backbone frozen)": float(np.mean(timer.seconds[1:stage_steps])),
        "stage 2 (all trained)": float(np.mean(timer.seconds[stage_steps + 1 :])),
    }

    threads = torch.get_num_threads()
    print(
        f"\nSmolTolk-150M ({source}), context {C}, batch {B} ({B * C} tokens/step), training on {threads} threads; "
        f"data on 1 thread; {args.steps} timed steps per stage\n"
    )
    print("| what | tokens/s | s/step | data / training |")
    print("|---|---:|---:|---:|")
    for stage, (data_name, data_rate), (step_name, seconds) in zip((1, 2), data_rates.items(), step_seconds.items()):
        print(f"| sample building, {data_name}, 1 core | {data_rate:,.0f} | | |")
        train_rate = B * C / seconds
        print(
            f"| training step, {step_name}, {threads} threads | {train_rate:,.0f} | {seconds:.2f} | "
            f"{data_rate / train_rate:,.0f}x |"
        )
    print(
        f"\nstage-1 step / stage-2 step: {step_seconds['stage 1 (backbone frozen)'] / step_seconds['stage 2 (all trained)']:.2f}"
    )


if __name__ == "__main__":
    main()
