"""Latency and throughput of the speech-continuation pipeline against `generate()` called directly.

SmolTolk-150M (preset `smoltolk-150m`, random weights), CPU. A speech prompt of `--prompt-units` units is continued
with `--new-units` units, sampled with the authors' speech settings (temperature 0.8, top-k 50; `min_new_tokens` fixes
the length, so both paths generate the same number of units):

- `generate()`: the prompt already as joint ids, `model.generate(...)` directly;
- pipeline: `pipe(units)` from the unit list (processor, pipeline machinery, postprocessing into units).

Reports the median, over round-robin repetitions, of the time to the first generated unit (through a streamer),
the total time, and units per second; for a batch of `--batch` prompts, total time and aggregate units per second.
The difference is the pipeline's overhead.

    python benchmarks/bench_pipeline.py [--repeats 5] [--new-units 64] [--threads 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast, pipeline
from transformers.generation.streamers import BaseStreamer

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM, SmolTolkProcessor
from smoltolk_hf.pipeline_speech_continuation import register_pipeline


class FirstTokenTimer(BaseStreamer):
    """Records when generate() emits its first new token (the prompt comes first and is skipped)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen and self.first is None:
            self.first = time.perf_counter()
        self._prompt_seen = True

    def end(self) -> None:
        pass


def build(dtype: torch.dtype) -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    torch.manual_seed(0)
    model = SmolTolkForCausalLM(SmolTolkConfig.from_preset("smoltolk-150m")).to(dtype).eval()
    # Unit prompts need no text tokenizer beyond the processor's interface: a one-token stand-in.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    return model, SmolTolkProcessor(tokenizer, vocab_size=model.config.vocab_size, num_speech_units=500)


def timed(run, streamer: FirstTokenTimer | None) -> tuple[float | None, float]:
    """(seconds to the first new token, total seconds) of `run()`."""
    start = time.perf_counter()
    run()
    total = time.perf_counter() - start
    return (None if streamer is None else streamer.first - start), total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-units", type=int, default=100)
    parser.add_argument("--new-units", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_pipeline()

    model, processor = build(getattr(torch, args.dtype))
    pipe = pipeline("speech-continuation", model=model, processor=processor, device="cpu")
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 500, (args.prompt_units,), generator=generator).tolist() for _ in range(args.batch)]
    ids = processor(units=prompts, return_tensors="pt", padding_side="left")
    n = args.new_units
    sampling = dict(do_sample=True, temperature=0.8, top_k=50, max_new_tokens=n, min_new_tokens=n)

    def direct(batch: int, streamer: FirstTokenTimer | None):
        inputs = {key: value[:batch] for key, value in ids.items()}
        return lambda: model.generate(**inputs, **sampling, streamer=streamer)

    def piped(batch: int, streamer: FirstTokenTimer | None):
        if batch == 1:
            return lambda: pipe(prompts[0], streamer=streamer, **sampling)
        return lambda: pipe(prompts[:batch], batch_size=batch, **sampling)

    cases = {
        ("generate()", 1): direct,
        ("pipeline", 1): piped,
        ("generate()", args.batch): direct,
        ("pipeline", args.batch): piped,
    }
    times: dict[tuple[str, int], list[tuple[float | None, float]]] = {case: [] for case in cases}
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):  # the first round warms up
            for (path, batch), make in cases.items():
                streamer = FirstTokenTimer() if batch == 1 else None
                measured = timed(make(batch, streamer), streamer)
                if repeat > 0:
                    times[(path, batch)].append(measured)

    print(
        f"SmolTolk-150M (random weights), {args.dtype}, CPU, {args.threads} threads; speech prompt of "
        f"{args.prompt_units} units, {n} new units (temperature 0.8, top-k 50); median of {args.repeats}\n"
    )
    print("| path | batch | first unit (ms) | total (s) | units/s | pipeline overhead |")
    print("|---|---|---|---|---|---|")
    for (path, batch), measured in times.items():
        first = [f for f, _ in measured if f is not None]
        total = statistics.median(t for _, t in measured)
        baseline = statistics.median(t for _, t in times[("generate()", batch)])
        overhead = "-" if path == "generate()" else f"{1000 * (total - baseline):+.0f} ms ({total / baseline - 1:+.1%})"
        first_ms = f"{1000 * statistics.median(first):.0f}" if first else "-"
        print(f"| {path} | {batch} | {first_ms} | {total:.2f} | {batch * n / total:.1f} | {overhead} |")


if __name__ == "__main__":
    main()
