"""Pair-scoring throughput on CPU against the forward passes it needs (issue 15 item 5).

For each model and setting, two timings alternate in one run (medians over `--rounds`):

- **scoring**: `score_pairs` end to end under the authors' protocol (encoding the candidates, the S->T prefixes,
  batching, the forward, the per-token log-probabilities, the reduction);
- **bare forward**: the model's own forward with labels (`model(input_ids, attention_mask, labels)`: backbone,
  adapters, and each head on exactly the scored targets, as in training) over the same padded batches, built before
  the clock starts.

Both process the same padded tokens, so tokens/s compare directly; the ratio is the median over rounds of each
round's scoring throughput over its bare-forward throughput. Models: a
tiny SmolTolk and SmolTolk-150M (random weights, `SmolTolkConfig.from_preset("smoltolk-150m")`). Pairs are synthetic
spoken-StoryCloze-sized: a context of `--context` units (S, S->T) or a 40-token text (T->S), continuations of
0.5x-1.5x `--continuation` units or a sentence of text.
Run: `TQDM_DISABLE=1 python benchmarks/bench_eval.py [--pairs 8] [--batch-size 8] [--rounds 3] [--threads 2]
[--models tiny smoltolk-150m]`. Prints a markdown table.
"""

import argparse
import os
import statistics
import time

import numpy as np
import torch

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM, SmolTolkProcessor
from smoltolk_hf.evaluation import ClozeItem, ScoringOptions, build_pairs, score_pairs
from smoltolk_hf.evaluation.batching import padded_batches
from smoltolk_hf.evaluation.scoring import encode_pair
from smoltolk_hf.testing_utils import byte_level_tokenizer

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TEXT = "the quick brown fox jumps over the lazy dog"


def synthetic_items(n: int, context: int, continuation: int, seed: int = 0) -> list[ClozeItem]:
    rng = np.random.default_rng(seed)

    def units(length: float) -> np.ndarray:
        return rng.integers(0, 500, size=max(1, int(length)))

    return [
        ClozeItem(
            id=str(i),
            context={"speech": units(context), "text": " ".join([TEXT] * 4)},
            correct={"speech": units(continuation * rng.uniform(0.5, 1.5)), "text": TEXT},
            incorrect={"speech": units(continuation * rng.uniform(0.5, 1.5)), "text": TEXT[::-1]},
        )
        for i in range(n)
    ]


def padded(model, processor, pairs, options) -> list[dict[str, torch.Tensor]]:
    """The batches scoring runs its forward on: the same encoding, targets and padding, prepared in advance."""
    sequences, labels = [], []
    for pair in pairs:
        for ids, targets in encode_pair(processor, pair, options):
            sequences.append(ids)
            scored = set(targets)
            labels.append([ids[j] if j in scored else -100 for j in range(len(ids))])
    return [batch for _, batch in padded_batches(sequences, model.config, options.batch_size, labels, desc="padding")]


@torch.no_grad()
def bare_forward(model, batches) -> None:
    for batch in batches:
        model(**batch)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--context", type=int, default=150, help="context units (6 s at 25 Hz)")
    parser.add_argument("--continuation", type=int, default=50, help="mean continuation units")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--models", nargs="+", default=["tiny", "smoltolk-150m"], choices=["tiny", "smoltolk-150m"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # A small BPE so that text needs no download (its ids are valid text ids of any model).
    tokenizer = byte_level_tokenizer([TEXT] * 10, vocab_size=400)
    items = synthetic_items(args.pairs, args.context, args.continuation)
    options = ScoringOptions(batch_size=args.batch_size)
    configs = {
        "tiny": SmolTolkConfig(vocab_size=len(tokenizer), num_speech_units=500, **TINY),
        "smoltolk-150m": SmolTolkConfig.from_preset("smoltolk-150m"),
    }
    print(
        f"\n{args.pairs} pairs, context {args.context} units / 40 text tokens, continuations ~{args.continuation} "
        f"units or a sentence, batch {args.batch_size}, {args.threads} threads, fp32, medians of {args.rounds} "
        f"alternating rounds, load average {os.getloadavg()[0]:.1f} at the start\n"
    )
    print("| model | setting | padded tokens | scoring (tokens/s) | bare forward (tokens/s) | scoring / forward |")
    print("|---|---|---|---|---|---|", flush=True)
    for name in args.models:
        torch.manual_seed(0)
        model = SmolTolkForCausalLM(configs[name]).eval()
        processor = SmolTolkProcessor.from_config(tokenizer, None, model.config)
        for setting in ("S", "T->S", "S->T"):
            pairs = build_pairs(items, setting)
            batches = padded(model, processor, pairs, options)
            tokens = sum(b["input_ids"].numel() for b in batches)
            score_pairs(model, processor, pairs[:2], options)  # warm-up
            scoring, forward = [], []
            for _ in range(args.rounds):
                scoring.append(timed(score_pairs, model, processor, pairs, options))
                forward.append(timed(bare_forward, model, batches))
            # Each round's two timings are neighbours in time: their ratio cancels the drift of a shared machine.
            ratio = statistics.median(f / s for s, f in zip(scoring, forward))
            print(
                f"| {name} | {setting.replace('->', '→')} | {tokens} | {tokens / statistics.median(scoring):.0f} | "
                f"{tokens / statistics.median(forward):.0f} | {ratio:.2f} |",
                flush=True,
            )
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
