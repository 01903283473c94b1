"""Speed and memory of SmolTolk-150M and the 135M baseline against a plain LlamaForCausalLM, in one run.

SmolLM-135M architecture, bf16, CPU, random weights:
- a training step (forward, backward, AdamW step) on 1 x 512 tokens (interleaved text-speech for SmolTolk and the
  baseline, text for Llama), timed round-robin across the models;
- greedy generation with the KV cache (32-token prompt, 64 new tokens), dynamic and static (`cache_implementation=
  "static"`), from a text prompt (all models) and from a speech prompt (speech models; ratio still against Llama's
  text generation with the same cache);
- peak training memory: resident-memory increase of building the model and two training steps, each model in a
  fresh process (torch's CPU allocator keeps no peak counter).
Reports medians and ratios against Llama.

    python benchmarks/bench_model.py [--steps 5] [--threads 2] [--generation-only]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time

import psutil
import torch
import transformers

SEQ_LEN, PROMPT_LEN, NEW_TOKENS = 512, 32, 64


def build(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM
    from smoltolk_hf.configuration_smoltolk import smollm_backbone_sizes

    torch.manual_seed(0)
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(**smollm_backbone_sizes("135m"))).to(torch.bfloat16)
    return SmolTolkForCausalLM(SmolTolkConfig.from_preset(name)).to(torch.bfloat16)


def interleaved_ids(config, length: int, generator: torch.Generator) -> torch.Tensor:
    """Alternating runs of ~20 text tokens and ~40 speech units, a marker at each switch."""
    ids, speech = [], False
    while len(ids) < length:
        if speech:
            run = (torch.randint(0, config.num_speech_units, (40,), generator=generator) + config.speech_token_offset)
            ids += [config.speech_marker_id] + run.tolist()
        else:
            ids += [config.text_marker_id] + torch.randint(0, config.vocab_size, (20,), generator=generator).tolist()
        speech = not speech
    return torch.tensor([ids[:length]])


def text_ids(config, length: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (1, length), generator=generator)


class PeakRSS:
    """Samples the process's resident memory in a thread (torch's CPU allocator has no peak counter)."""

    def __init__(self) -> None:
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def __enter__(self) -> "PeakRSS":
        self.start = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def train_step(model, ids: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def batch_for(name: str, config, length: int, generator: torch.Generator) -> torch.Tensor:
    return text_ids(config, length, generator) if name == "llama" else interleaved_ids(config, length, generator)


def memory_worker(name: str) -> float:
    """Peak resident-memory increase of building `name` and running two training steps (a fresh process)."""
    generator = torch.Generator().manual_seed(0)
    with PeakRSS() as memory:
        model = build(name)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(2):
            train_step(model, batch_for(name, model.config, SEQ_LEN, generator), optimizer)
    return memory.increase_mb


CACHES = {"dynamic": {}, "static": {"cache_implementation": "static"}}


def timings(names: list[str], steps: int, train: bool) -> dict[str, dict[str, float]]:
    """Round-robin over the models at every repetition, so that load drift on a shared machine hits all alike."""
    generator = torch.Generator().manual_seed(0)
    models = {name: build(name) for name in names}
    results: dict[str, dict[str, float]] = {name: {} for name in names}
    if train:
        optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
        step_times: dict[str, list[float]] = {name: [] for name in names}
        for repetition in range(steps + 1):  # repetition 0 warms up
            for name, model in models.items():
                elapsed = train_step(model, batch_for(name, model.config, SEQ_LEN, generator), optimizers[name])
                if repetition:
                    step_times[name].append(elapsed)
        for name, t in step_times.items():
            results[name]["train_step_s"] = statistics.median(t)

    settings = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
    prompts = {}
    for name, model in models.items():
        model.eval()
        prompts[(name, "text")] = text_ids(model.config, PROMPT_LEN, generator)
        if name != "llama":
            speech_prompt = interleaved_ids(model.config, PROMPT_LEN, generator)
            speech_prompt[0, -1] = model.config.speech_token_offset + 7  # continue a speech span
            prompts[(name, "speech")] = speech_prompt
    gen_times: dict[tuple[str, str, str], list[float]] = {
        (name, modality, cache): [] for (name, modality) in prompts for cache in CACHES
    }
    with torch.no_grad():
        for repetition in range(max(3, steps // 2) + 1):  # repetition 0 warms up
            for name, modality, cache in gen_times:
                start = time.perf_counter()
                out = models[name].generate(prompts[(name, modality)], **settings, **CACHES[cache])
                assert out.shape[1] == PROMPT_LEN + NEW_TOKENS
                if repetition:
                    gen_times[(name, modality, cache)].append(time.perf_counter() - start)
    for (name, modality, cache), t in gen_times.items():
        results[name][f"generate_{modality}_{cache}_tok_per_s"] = NEW_TOKENS / statistics.median(t)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generation-only", action="store_true", help="skip the training step and memory figures")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker)))
        return

    names = ["llama", "baseline-135m", "smoltolk-150m"]
    results = timings(names, args.steps, train=not args.generation_only)
    base = results["llama"]
    print(
        f"\nSmolLM-135M architecture, bf16, CPU ({args.threads} threads), torch {torch.__version__}, transformers "
        f"{transformers.__version__}, medians of {args.steps} round-robin repetitions\n"
    )
    if not args.generation_only:
        peak_mb = {}
        for name in names:
            command = [sys.executable, __file__, "--memory-worker", name, "--threads", str(args.threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            peak_mb[name] = json.loads(output.split()[-1])
        print("| model | train step 1x512 (s) | ratio | peak train memory (MiB) | ratio |")
        print("|---|---|---|---|---|")
        for name in names:
            step = results[name]["train_step_s"]
            print(
                f"| {name} | {step:.2f} | {step / base['train_step_s']:.2f}x | {peak_mb[name]:.0f} | "
                f"{peak_mb[name] / peak_mb['llama']:.2f}x |"
            )
        print()
    print("| model | cache | text generate (tok/s) | ratio | speech generate (tok/s) | ratio |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for cache in CACHES:
            llama = base[f"generate_text_{cache}_tok_per_s"]
            cells = []
            for modality in ("text", "speech"):
                speed = results[name].get(f"generate_{modality}_{cache}_tok_per_s")
                cells.append("- | -" if speed is None else f"{speed:.1f} | {speed / llama:.2f}x")
            print(f"| {name} | {cache} | {' | '.join(cells)} |")

if __name__ == "__main__":
    main()
