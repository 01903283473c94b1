"""Does sample building keep up with training? Data throughput per core vs a SmolTolk-150M training step.

1. Sample building (one process, one thread): stage-1 samples (interleaved) and stage-2 mixture samples from
   pre-tokenized data, with `benchmarks/bench_data.py`'s synthetic datasets, in tokens/s per core.
2. Training (all threads of this machine): SmolTolk-150M (from the embedded SmolLM2-135M backbone when it is
   installed, else randomly initialised) trained by `SmolTolkTrainer` on the same data, timing every optimizer
   step of stage 1 (backbone frozen) and stage 2 (everything trained); the first step of each stage is a warm-up.
   Each stage's peak memory is the peak resident memory during its steps (warm-up included: AdamW creates its
   moments there) above the resident memory at the start of training (model and data loaded). Every round trains
   in a fresh process; with `--before-src DIR` (the `src` folder of another checkout, e.g. from
   `git archive <commit> src | tar -x -C <folder>`) the rounds alternate between that code and this checkout's.
   The figures are medians over the rounds.

Prints markdown tables; the target is data building >= 20x what training consumes.

    python benchmarks/bench_training.py [--context-length 512] [--batch-size 2] [--steps 3] [--rounds 3]
        [--before-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(__file__))
from bench_data import load_tokenizer, speech_dataset, text_datasets, throughput, word_stream
from bench_model import PeakRSS

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.data.mixture import SmolTolkMixture
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder
from smoltolk_hf.modeling_smoltolk import SmolTolkForCausalLM
from smoltolk_hf.training import SmolTolkTrainer, TwoStageSchedule


class StepTimer(TrainerCallback):
    """Wall time (forward, backward, clipping, AdamW, schedule) and peak resident memory of each optimizer step."""

    def __init__(self, memory: PeakRSS):
        self.memory, self.seconds, self.peak_mb = memory, [], []

    def on_train_begin(self, args, state, control, **kwargs):
        self._base = self.memory.process.memory_info().rss

    def on_step_begin(self, args, state, control, **kwargs):
        self.memory.peak = 0
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)
        self.peak_mb.append((self.memory.peak - self._base) / 2**20)


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


STAGES = ("stage 1 (backbone frozen)", "stage 2 (all trained)")


def build_mixture(context_length: int, batch_size: int, stage_steps: int, model) -> SmolTolkMixture:
    """The benchmark's mixture: `stage_steps` optimizer steps of interleaved data, then the stage-2 mixture."""
    tokenizer, words, rng = load_tokenizer(), word_stream(), np.random.default_rng(0)
    speech = speech_dataset(rng, 2000, words)
    _, tokenized_text = text_datasets(rng, 2000, words, tokenizer)
    C, config = context_length, model.config
    return SmolTolkMixture(
        speech=[SpeechSampleBuilder(speech, config, C)],
        text=[TextSampleBuilder(tokenized_text, config, tokenizer, C)],
        interleaved=[InterleavedSampleBuilder(speech, config, tokenizer, C)],
        stage1_samples=stage_steps * batch_size,
        rank=0,
        world_size=1,
        worker_batch_size=batch_size,
    )


def train_worker(context_length: int, batch_size: int, steps: int) -> dict:
    """Trains `steps` + 1 steps of each stage in this process: per stage, the mean timed step and the peak memory."""
    model, source = smoltolk_150m()
    stage_steps = steps + 1
    mixture = build_mixture(context_length, batch_size, stage_steps, model)
    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as output_dir, PeakRSS() as memory:
        timer = StepTimer(memory)
        training_args = TrainingArguments(
            output_dir=output_dir,
            max_steps=2 * stage_steps,
            per_device_train_batch_size=batch_size,
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
    stages = {STAGES[0]: slice(0, stage_steps), STAGES[1]: slice(stage_steps, None)}
    return {
        "source": source,
        "threads": torch.get_num_threads(),
        "seconds": {name: float(np.mean(timer.seconds[s][1:])) for name, s in stages.items()},
        "peak_mb": {name: float(max(timer.peak_mb[s])) for name, s in stages.items()},
    }


def run_worker(args: argparse.Namespace, src: str | None) -> dict:
    """`train_worker` in a fresh process, importing `smoltolk_hf` from `src` if given."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (os.path.abspath(src), env.get("PYTHONPATH"))))
    command = [sys.executable, __file__, "--train-worker", "--context-length", str(args.context_length)]
    command += ["--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps timed per stage (after a warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="training runs per code version (fresh processes)")
    parser.add_argument("--before-src", help="another checkout's src folder, trained alternately with this one")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per data measurement")
    parser.add_argument("--train-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    C, B = args.context_length, args.batch_size
    if args.train_worker:
        print(json.dumps(train_worker(C, B, args.steps)))
        return

    versions = {"this checkout": None} if args.before_src is None else {"before": args.before_src, "after": None}
    runs: dict[str, list[dict]] = {version: [] for version in versions}
    for _ in range(args.rounds):
        for version, src in versions.items():
            runs[version].append(run_worker(args, src))

    model, _ = smoltolk_150m()
    mixture = build_mixture(C, B, args.steps + 1, model)
    torch.set_num_threads(1)
    data_rates = {
        STAGES[0]: throughput(mixture.sample, C, args.seconds)[0] * C,
        STAGES[1]: throughput(lambda k: mixture.sample(mixture.stage1_samples + k), C, args.seconds)[0] * C,
    }

    first = next(iter(runs.values()))[0]
    print(
        f"\nSmolTolk-150M ({first['source']}), context {C}, batch {B} ({B * C} tokens/step), training on "
        f"{first['threads']} threads; data on 1 thread; {args.steps} timed steps per stage; medians of "
        f"{args.rounds} rounds, versions alternating\n"
    )
    print("| version | stage | data tokens/s (1 core) | training tokens/s | s/step | peak memory (MiB) | data / training |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for version, version_runs in runs.items():
        seconds = {stage: float(np.median([run["seconds"][stage] for run in version_runs])) for stage in STAGES}
        peak = {stage: float(np.median([run["peak_mb"][stage] for run in version_runs])) for stage in STAGES}
        for stage in STAGES:
            train_rate = B * C / seconds[stage]
            print(
                f"| {version} | {stage} | {data_rates[stage]:,.0f} | {train_rate:,.0f} | {seconds[stage]:.2f} | "
                f"{peak[stage]:,.0f} | {data_rates[stage] / train_rate:,.0f}x |"
            )
        print(
            f"\n{version}: stage-1 step / stage-2 step {seconds[STAGES[0]] / seconds[STAGES[1]]:.2f}, "
            f"stage-1 peak / stage-2 peak {peak[STAGES[0]] / peak[STAGES[1]]:.2f}"
        )


if __name__ == "__main__":
    main()
