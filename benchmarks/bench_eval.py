"""Pair-scoring throughput on CPU: pairs scored per second, batched vs one by one.

Models: a tiny SmolTolk and SmolTolk-150M (random weights, `SmolTolkConfig.from_preset("smoltolk-150m")`).
Pairs are synthetic spoken-StoryCloze-sized pairs: a context of `--context` units (S) or a 40-token text context
(T->S), and continuations of 0.5x-1.5x `--continuation` units (25 Hz units: 100 units = 4 s).
Run: `python benchmarks/bench_eval.py [--pairs 16] [--batch-size 8] [--threads 2]`. Prints a markdown table.
"""

import argparse
import time

import numpy as np
import torch

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM, SmolTolkProcessor
from smoltolk_hf.evaluation import ClozeItem, ScoringOptions, build_pairs, score_pairs
from smoltolk_hf.testing_utils import byte_level_tokenizer

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def synthetic_items(n: int, context: int, continuation: int, seed: int = 0) -> list[ClozeItem]:
    rng = np.random.default_rng(seed)

    def units(length: float) -> np.ndarray:
        return rng.integers(0, 500, size=max(1, int(length)))

    text = "the quick brown fox jumps over the lazy dog " * 4
    return [
        ClozeItem(
            id=str(i),
            context={"speech": units(context), "text": text.strip()},
            correct={"speech": units(continuation * rng.uniform(0.5, 1.5))},
            incorrect={"speech": units(continuation * rng.uniform(0.5, 1.5))},
        )
        for i in range(n)
    ]


def pairs_per_second(model, processor, pairs, batch_size: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = score_pairs(model, processor, pairs, ScoringOptions(batch_size=batch_size))
    return len(pairs) / (time.perf_counter() - start), scores.correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--context", type=int, default=150, help="context units (6 s at 25 Hz)")
    parser.add_argument("--continuation", type=int, default=50, help="mean continuation units")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # A small BPE so that text contexts need no download (its ids are valid text ids of any model).
    tokenizer = byte_level_tokenizer(["the quick brown fox jumps over the lazy dog"] * 10, vocab_size=400)
    items = synthetic_items(args.pairs, args.context, args.continuation)
    rows = []
    for name, config in (
        (
            "tiny (4 layers, d 64)",
            SmolTolkConfig(vocab_size=len(tokenizer), num_speech_units=500, **TINY),
        ),
        ("smoltolk-150m", SmolTolkConfig.from_preset("smoltolk-150m")),
    ):
        torch.manual_seed(0)
        model = SmolTolkForCausalLM(config).eval()
        processor = SmolTolkProcessor.from_config(tokenizer, None, config)
        for setting in ("S", "T->S"):
            pairs = build_pairs(items, setting)
            score_pairs(model, processor, pairs[:2])  # warm-up
            single, single_scores = pairs_per_second(model, processor, pairs, 1)
            batched, batched_scores = pairs_per_second(model, processor, pairs, args.batch_size)
            difference = float(np.abs(single_scores - batched_scores).max())
            rows.append((name, setting, len(pairs), single, batched, difference))

    print(
        f"\n{args.pairs} pairs, context {args.context} units / 40 text tokens, continuations ~{args.continuation} "
        f"units, {args.threads} threads, fp32\n"
    )
    print(
        f"| model | setting | pairs | one by one (pairs/s) | batched x{args.batch_size} (pairs/s) | speed-up | "
        "max score diff |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, setting, n, single, batched, difference in rows:
        print(
            f"| {name} | {setting} | {n} | {single:.2f} | {batched:.2f} | {batched / single:.2f}x | {difference:.1e} |"
        )


if __name__ == "__main__":
    main()
