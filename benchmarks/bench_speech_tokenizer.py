"""Speech tokenizer throughput on CPU with a HuBERT-base-sized random model, batched vs one by one.

Also measures how many units agree when long audio is chunked (`max_chunk_seconds`) vs encoded whole.
Run: `python benchmarks/bench_speech_tokenizer.py [--utterances 16] [--seconds 4] [--threads 2]`.
Prints markdown tables.
"""

import argparse
import time

import numpy as np
import torch
from transformers import HubertConfig, HubertModel

from smoltolk_hf.tokenization_speech import HubertFrontEnd, SpeechTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="mean utterance length (lengths vary +-50%)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # mHuBERT-base-25hz layout: HuBERT base (12 layers, 768 hidden, group-norm conv) with one more stride-2 conv.
    config = HubertConfig(
        conv_dim=[512] * 8, conv_kernel=[10, 3, 3, 3, 3, 2, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2, 2]
    )
    torch.manual_seed(0)
    frontend = HubertFrontEnd(HubertModel(config).eval(), layer=11)
    rng = np.random.default_rng(0)
    tokenizer = SpeechTokenizer(rng.standard_normal((500, 768)).astype(np.float32), frontend)
    lengths = rng.uniform(0.5, 1.5, args.utterances) * args.seconds
    audio = [rng.standard_normal(int(s * 16_000)).astype(np.float32) * 0.1 for s in lengths]
    tokenizer(audio[:2])  # warm-up

    start = time.perf_counter()
    one_by_one = [tokenizer(a) for a in audio]
    one_by_one_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = tokenizer(audio, batch_size=args.batch_size)
    batched_seconds = time.perf_counter() - start
    assert all((a == b).all() for a, b in zip(one_by_one, batched)), "batched units differ from one-by-one units"
    rows = [("one by one", one_by_one_seconds), (f"batched ({args.batch_size})", batched_seconds)]
    print(
        f"HuBERT-base-size random model, layer 11, 500 units, 25 Hz; {args.utterances} utterances, "
        f"{lengths.sum():.0f} s of audio, {args.threads} CPU threads\n"
    )
    print("| mode | wall time (s) | audio seconds per second (x real time) |\n|---|---|---|")
    for mode, seconds in rows:
        print(f"| {mode} | {seconds:.1f} | {lengths.sum() / seconds:.1f} |")

    # Chunked vs whole: a 60 s utterance, chunk limits below it.
    long_audio = rng.standard_normal(60 * 16_000).astype(np.float32) * 0.1
    whole = tokenizer(long_audio, deduplicate=False)
    print(
        "\n| max_chunk_seconds | frames whole | frames chunked | units agreeing (aligned frames) |\n|---|---|---|---|"
    )
    for limit in (30.0, 10.0):
        chunked = SpeechTokenizer(tokenizer.centroids, frontend, max_chunk_seconds=limit)(
            long_audio, deduplicate=False
        )
        # Each chunk loses the frames whose receptive field would cross its end; align chunk by chunk.
        hop = int(limit * tokenizer.frame_rate)
        per_chunk = frontend.num_frames(int(limit * 16_000))
        aligned = np.concatenate([whole[i * hop : i * hop + per_chunk] for i in range(len(chunked) // per_chunk)])
        agree = (aligned == chunked[: len(aligned)]).mean()
        print(f"| {limit:.0f} | {len(whole)} | {len(chunked)} | {agree:.1%} |")


if __name__ == "__main__":
    main()
