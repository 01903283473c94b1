"""Speed and memory of SmolTolk-150M and the 135M baseline against a plain LlamaForCausalLM, in one run.

SmolLM-135M architecture, bf16, CPU, random weights:
- a training step (forward, backward, AdamW step) on 1 x 512 tokens (interleaved text-speech for SmolTolk and the
  baseline, text for Llama), timed round-robin across the models, in total and by phase;
- greedy generation with the KV cache (32-token prompt, 64 new tokens), dynamic and static (`cache_implementation=
  "static"`), from a text prompt (all models) and from a speech prompt (speech models; ratio still against Llama's
  text generation with the same cache);
- peak training memory: resident-memory increase of building the model and two training steps, each model in a
  fresh process (torch's CPU allocator keeps no peak counter), median of `--memory-runs` processes per model.
The optimizer is AdamW with `fused=True`, what the Trainer trains with (its default `optim="adamw_torch_fused"`).
Reports medians and ratios against Llama.

With `--profile`, instead: where the time of one training step goes (`torch.profiler`), per model, by phase
(forward, backward, AdamW step) and by kind of operator, the models alternating.

With `--compile`, instead: each model's training step with `torch.compile(model, fullgraph=True)` (default
backend, inductor) against the same model in eager mode, alternating: the compile time (first compiled step minus
an eager step) and the steady-state speed-up (median eager step / median compiled step).

A model is `llama`, a preset, or a preset with config overrides, which prices each part of SmolTolk by ablation:
`smoltolk-150m:num_output_adapter_layers=0`, `smoltolk-150m:use_layer_pooling=False,use_dynamic_pooling=False,
pooling_norm=none` (one argument, no spaces).

    python benchmarks/bench_model.py [--steps 5] [--threads 2] [--generation-only | --training-only]
        [--profile | --compile] [--models llama smoltolk-150m]
"""

from __future__ import annotations

import argparse
import json
import os
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
    """`llama`, a SmolTolk preset, or a preset with config overrides after a colon (an ablation, e.g.
    `smoltolk-150m:num_output_adapter_layers=0`; values read as the training config reads them)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM
    from smoltolk_hf.configuration_smoltolk import smollm_backbone_sizes
    from smoltolk_hf.training.config import parse_assignment

    torch.manual_seed(0)
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(**smollm_backbone_sizes("135m"))).to(torch.bfloat16)
    preset, _, overrides = name.partition(":")
    fields = dict(parse_assignment(item) for item in overrides.split(",") if item)
    config = SmolTolkConfig.from_preset(preset, **fields)
    return SmolTolkForCausalLM(config).to(torch.bfloat16)


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


def adamw(model) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)


PHASES = ("forward", "backward", "AdamW step")


def train_step_phases(model, ids: torch.Tensor, optimizer: torch.optim.Optimizer, call=None) -> dict[str, float]:
    """Seconds of the forward (with the loss), the backward and the AdamW step of one training step (`call`: the
    model or a compiled version of it)."""
    start = time.perf_counter()
    loss = (model if call is None else call)(input_ids=ids, labels=ids).loss
    forward_end = time.perf_counter()
    loss.backward()
    backward_end = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    end = time.perf_counter()
    return dict(zip(PHASES, (forward_end - start, backward_end - forward_end, end - backward_end)))


def train_step(model, ids: torch.Tensor, optimizer: torch.optim.Optimizer, call=None) -> float:
    """Seconds of one forward, backward and AdamW step."""
    return sum(train_step_phases(model, ids, optimizer, call).values())


def batch_for(name: str, config, length: int, generator: torch.Generator) -> torch.Tensor:
    return text_ids(config, length, generator) if name == "llama" else interleaved_ids(config, length, generator)


def memory_worker(name: str) -> float:
    """Peak resident-memory increase of building `name` and running two training steps (a fresh process)."""
    generator = torch.Generator().manual_seed(0)
    with PeakRSS() as memory:
        model = build(name)
        optimizer = adamw(model)
        for _ in range(2):
            train_step(model, batch_for(name, model.config, SEQ_LEN, generator), optimizer)
    return memory.increase_mb


CACHES = {"dynamic": {}, "static": {"cache_implementation": "static"}}


def timings(names: list[str], steps: int, train: bool, generate: bool) -> dict[str, dict[str, float]]:
    """Round-robin over the models at every repetition, so that load drift on a shared machine hits all alike."""
    generator = torch.Generator().manual_seed(0)
    models = {name: build(name) for name in names}
    results: dict[str, dict[str, float]] = {name: {} for name in names}
    if train:
        optimizers = {name: adamw(m) for name, m in models.items()}
        step_phases: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for repetition in range(steps + 1):  # repetition 0 warms up
            for name, model in models.items():
                ids = batch_for(name, model.config, SEQ_LEN, generator)
                phases = train_step_phases(model, ids, optimizers[name])
                if repetition:
                    step_phases[name].append(phases)
        llama_steps = [sum(run.values()) for run in step_phases["llama"]]
        for name, runs in step_phases.items():
            steps_s = [sum(run.values()) for run in runs]
            results[name]["train_step_s"] = statistics.median(steps_s)
            # Each repetition's step against Llama's of the same repetition: the spread of these paired ratios shows
            # how far load drift moves the ratio.
            paired = [step / llama for step, llama in zip(steps_s, llama_steps)]
            one = len(paired) == 1  # quantiles need two points
            quartiles = paired * 3 if one else statistics.quantiles(paired, n=4, method="inclusive")
            results[name]["paired_ratio_quartiles"] = quartiles
            for phase in PHASES:
                results[name][f"{phase}_s"] = statistics.median(run[phase] for run in runs)
    if not generate:
        return results

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


OPERATOR_KINDS = {  # first match wins; the rest is elementwise work (norms, activations, rotary, residuals, ...)
    "matrix products": ("aten::mm", "aten::bmm", "aten::addmm"),
    "attention kernels": ("scaled_dot_product",),
    "log-softmax / cross-entropy": ("log_softmax", "nll_loss"),
    "copies and dtype casts": ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::stack", "aten::index"),
    "embedding lookups and gradients": ("embedding",),
}


def profile_step(model, ids: torch.Tensor, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Seconds of one training step by phase and, for forward + backward, by operator kind (self times)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("phase: forward"):
            loss = model(input_ids=ids, labels=ids).loss
        with record_function("phase: backward"):
            loss.backward()
        with record_function("phase: AdamW step"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    seconds: dict[str, float] = {}
    events = prof.key_averages()
    for event in events:
        if event.key.startswith("phase: "):
            seconds[event.key] = event.cpu_time_total / 1e6
    in_optimizer = {e.key for e in events if "AdamW" in e.key or e.key.startswith("aten::_fused_adamw")}
    for event in events:
        if event.key.startswith("phase: ") or event.key in in_optimizer:
            continue
        kinds = (kind for kind, names in OPERATOR_KINDS.items() if any(name in event.key for name in names))
        kind = next(kinds, "elementwise and other")
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total / 1e6
    return seconds


def profiles(names: list[str], steps: int) -> dict[str, dict[str, float]]:
    """Median over `steps` profiled steps per model (after one warm-up step each), the models alternating."""
    generator = torch.Generator().manual_seed(0)
    models = {name: build(name) for name in names}
    optimizers = {name: adamw(model) for name, model in models.items()}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for repetition in range(steps + 1):
        for name, model in models.items():
            result = profile_step(model, batch_for(name, model.config, SEQ_LEN, generator), optimizers[name])
            if repetition:
                runs[name].append(result)
    return {name: {key: statistics.median(r.get(key, 0.0) for r in rs) for key in rs[0]} for name, rs in runs.items()}


def compile_timings(names: list[str], steps: int) -> dict[str, dict[str, float]]:
    """Per model: compile time of the training step and eager / compiled step-time medians, the two alternating."""
    generator, results = torch.Generator().manual_seed(0), {}
    for name in names:
        model = build(name)
        optimizer = adamw(model)
        compiled = torch.compile(model, fullgraph=True)
        batch = batch_for(name, model.config, SEQ_LEN, generator)
        warm_eager = train_step(model, batch, optimizer)
        first_compiled = train_step(model, batch, optimizer, compiled)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(steps):
            batch = batch_for(name, model.config, SEQ_LEN, generator)
            times["eager"].append(train_step(model, batch, optimizer))
            times["compiled"].append(train_step(model, batch, optimizer, compiled))
        eager, fast = statistics.median(times["eager"]), statistics.median(times["compiled"])
        results[name] = {"warm_eager_s": warm_eager, "compile_s": first_compiled - eager, "eager_s": eager}
        results[name]["compiled_s"] = fast
        del model, compiled, optimizer
        torch.compiler.reset()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generation-only", action="store_true", help="skip the training step and memory figures")
    parser.add_argument("--training-only", action="store_true", help="skip the generation figures")
    parser.add_argument("--profile", action="store_true", help="where a training step's time goes instead")
    parser.add_argument("--compile", action="store_true", help="compiled vs eager training step instead")
    parser.add_argument("--models", nargs="+", default=["llama", "baseline-135m", "smoltolk-150m"])
    parser.add_argument(
        "--memory-runs", type=int, default=3, help="fresh processes per model for peak memory (median; alternating)"
    )
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker)))
        return

    names = ["llama"] + [name for name in args.models if name != "llama"]
    header = (
        f"\nSmolLM-135M architecture, bf16, CPU ({args.threads} threads), torch {torch.__version__}, transformers "
        f"{transformers.__version__}, medians of {args.steps} {{}} repetitions, load before / after "
        f"{os.getloadavg()[0]:.1f} / {{:.1f}}\n"
    )
    if args.profile:
        results = profiles(names, args.steps)
        print(header.format("alternating", os.getloadavg()[0]))
        print("| phase or operator kind (s) | " + " | ".join(names) + " | ratio |")
        print("|---|" + "---|" * (len(names) + 1))
        for key in results[names[-1]]:
            cells = " | ".join(f"{results[name].get(key, 0.0):.2f}" for name in names)
            llama = results["llama"].get(key, 0.0)
            ratio = f"{results[names[-1]][key] / llama:.2f}x" if llama else "-"
            print(f"| {key} | {cells} | {ratio} |")
        return
    if args.compile:
        results = compile_timings(names, args.steps)
        print(header.format("alternating eager / compiled", os.getloadavg()[0]))
        print("| model | compile time, training step (s) | eager step (s) | compiled step (s) | speed-up |")
        print("|---|---|---|---|---|")
        for name, r in results.items():
            print(
                f"| {name} | {r['compile_s']:.0f} | {r['eager_s']:.2f} | {r['compiled_s']:.2f} | "
                f"{r['eager_s'] / r['compiled_s']:.2f}x |"
            )
        return
    results = timings(names, args.steps, train=not args.generation_only, generate=not args.training_only)
    base = results["llama"]
    print(header.format("round-robin", os.getloadavg()[0]))
    if not args.generation_only:
        # The resident-memory peak of one process varies by tens of MiB (allocator timing): median of fresh runs.
        runs: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(args.memory_runs):
            for name in names:
                command = [sys.executable, __file__, "--memory-worker", name, "--threads", str(args.threads)]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                runs[name].append(json.loads(output.split()[-1]))
        peak_mb = {name: statistics.median(r) for name, r in runs.items()}
        phase_columns = " | ".join(f"{phase} (s) | ratio" for phase in PHASES)
        print(f"| model | train step 1x512 (s) | ratio | paired ratios: median (quartiles) | {phase_columns} | "
              "peak train memory (MiB) | ratio |")  # fmt: skip
        print("|---|---|---|---|" + "---|---|" * len(PHASES) + "---|---|")
        for name in names:
            cells = [f"{results[name][key]:.2f} | {results[name][key] / base[key]:.2f}x"
                     for key in ["train_step_s"] + [f"{phase}_s" for phase in PHASES]]  # fmt: skip
            low, mid, high = results[name]["paired_ratio_quartiles"]
            cells.insert(1, f"{mid:.2f}x ({low:.2f}-{high:.2f})")
            memory = f"{peak_mb[name]:.0f} | {peak_mb[name] / peak_mb['llama']:.2f}x"
            print(f"| {name} | {' | '.join(cells)} | {memory} |")
        print(f"(peak memory: median of {args.memory_runs} fresh processes per model, each "
              f"{', '.join(f'{name} {min(r):.0f}-{max(r):.0f}' for name, r in runs.items())} MiB)\n")  # fmt: skip
    if args.training_only:
        return
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
