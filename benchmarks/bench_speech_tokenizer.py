"""Speech tokenizer throughput on CPU with a HuBERT-base-sized random model, against this machine's FLOP limit.

1. FLOP limit: HuBERT FLOPs per second of audio (conv encoder, transformer up to the output layer; counted with
   `torch.utils.flop_counter`) and the matmul GFLOP/s these cores reach in fp32 and bf16 (`torch.matmul`).
2. Throughput of fp32 (default) and bf16 autocast, one by one and batched, measured round robin (each variant in
   turn, `--repeats` times, medians), as wall time and as CPU time (per-core figures, less sensitive to other
   jobs on the machine), split into conv encoder and transformer.
3. Unit agreement of bf16 with fp32 (k-means codebook fitted on the fp32 features of the same audio, about 10
   frames per unit, at most 500 units).
4. The conv encoder alone: transformers' eager conv1d vs conv2d in channels-last layout (vs `torch.compile`).
5. Unit agreement when long audio is chunked (`max_chunk_seconds`) vs encoded whole.

Run: `python benchmarks/bench_speech_tokenizer.py [--audio DIR] [--utterances 16] [--seconds 4] [--threads 2]`.
`--audio` takes 16 kHz-or-other wav/flac files from a folder (e.g. the demo corpus) instead of random noise.
Prints markdown tables.
"""

import argparse
import glob
import os
import time
from functools import partial

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from torch.utils.flop_counter import FlopCounterMode
from transformers import HubertConfig, HubertModel

from smoltolk_hf.tokenization_speech import HubertFrontEnd, SpeechTokenizer, load_audio

LAYER = 11


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def matmul_flop_rates(dtype: torch.dtype, m: int = 1024, k: int = 768, n: int = 3072, repeats: int = 20):
    """Median FLOP/s of a plain `a @ b` at the transformer's feed-forward shape: per wall second, per CPU second."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        a @ b
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return 2 * m * k * n / np.median(walls), 2 * m * k * n / np.median(cpus)


@torch.inference_mode()
def flops_per_audio_second(model: HubertModel) -> tuple[float, float]:
    """(conv encoder, feature projection + positional conv + layers 1..LAYER) FLOPs per second of 16 kHz audio."""
    seconds = 10
    wave = torch.randn(1, seconds * 16_000) * 0.1
    with FlopCounterMode(display=False) as counter:
        conv = model.feature_extractor(wave)
    conv_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        hidden = model.feature_projection(conv.transpose(1, 2))
        for layer in model.encoder.layers[:LAYER]:
            layer(hidden)
    # The weight-normed positional conv is counted by hand (the counter cannot see through its parametrization).
    pos = model.encoder.pos_conv_embed.conv
    pos_flops = 2 * hidden.shape[1] * pos.out_channels * pos.in_channels // pos.groups * pos.kernel_size[0]
    return conv_flops / seconds, (counter.get_total_flops() + pos_flops) / seconds


def conv_encoder_channels_last(encoder: torch.nn.Module, wave: torch.Tensor) -> torch.Tensor:
    """HuBERT's group-norm conv encoder with each conv1d run as a channels-last conv2d (a variant measured here)."""
    hidden = wave[:, None, None]  # [batch, channels, 1, samples]
    for i, layer in enumerate(encoder.conv_layers):
        conv = layer.conv
        hidden = torch.nn.functional.conv2d(
            hidden.contiguous(memory_format=torch.channels_last),
            conv.weight[:, :, None],
            conv.bias,
            (1, conv.stride[0]),
        )
        if i == 0:
            hidden = layer.layer_norm(hidden[:, :, 0])[:, :, None]
        hidden = layer.activation(hidden)
    return hidden[:, :, 0]


@torch.inference_mode()
def conv_encoder_variants(model: HubertModel, audio: list[np.ndarray], repeats: int, compile: bool) -> None:
    """CPU time of the conv encoder alone, eager vs channels-last conv2d (vs torch.compile), fp32 and bf16."""
    encoder = model.feature_extractor
    variants = {"eager (transformers)": encoder, "conv2d, channels last": partial(conv_encoder_channels_last, encoder)}
    if compile:
        variants["torch.compile(dynamic=True)"] = torch.compile(encoder, dynamic=True)
    waves = [torch.from_numpy(a)[None] for a in audio]
    audio_seconds = sum(len(a) for a in audio) / 16_000
    print(
        "\n| conv encoder (per utterance) | dtype | first call (s) | CPU (s) | x real time per CPU second |"
        " ratio | max relative difference |\n|---|---|---|---|---|---|---|"
    )
    reference = [encoder(w) for w in waves]
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            first, error = {}, {}
            for name, run in variants.items():
                start = time.perf_counter()
                out = [run(w) for w in waves]
                first[name] = time.perf_counter() - start
                error[name] = max(((o.float() - r).norm() / r.norm()).item() for o, r in zip(out, reference))
            cpu = {name: [] for name in variants}
            for _ in range(repeats):
                for name, run in variants.items():
                    start = time.process_time()
                    [run(w) for w in waves]
                    cpu[name].append(time.process_time() - start)
        eager = np.median(cpu["eager (transformers)"])
        for name in variants:
            seconds = np.median(cpu[name])
            print(
                f"| {name} | {str(dtype).removeprefix('torch.')} | {first[name]:.1f} | {seconds:.2f} | "
                f"{audio_seconds / seconds:.1f} | {eager / seconds:.2f} | {error[name]:.1e} |"
            )


class ConvTimer:
    """Accumulates wall and CPU time spent in the conv feature encoder (forward hooks)."""

    def __init__(self, module: torch.nn.Module):
        self.wall = self.cpu = 0.0
        self._hooks = [module.register_forward_pre_hook(self._start), module.register_forward_hook(self._stop)]

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def _start(self, *args) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def _stop(self, *args) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--audio", help="folder of audio files to use instead of random noise")
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="mean noise utterance length (+-50%%)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-chunking", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the conv encoder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average (1/5/15 min) at start: {load_average()}; torch {torch.__version__}, {args.threads} threads\n")

    # mHuBERT-base-25hz layout: HuBERT base (12 layers, 768 hidden, group-norm conv) with one more stride-2 conv.
    config = HubertConfig(
        conv_dim=[512] * 8, conv_kernel=[10, 3, 3, 3, 3, 2, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2, 2]
    )
    torch.manual_seed(0)
    model = HubertModel(config).eval()
    rng = np.random.default_rng(0)
    if args.audio:
        files = sorted(glob.glob(os.path.join(args.audio, "*.wav")) + glob.glob(os.path.join(args.audio, "*.flac")))
        audio = [load_audio(f) for f in files[: args.utterances]]
    else:
        lengths = rng.uniform(0.5, 1.5, args.utterances) * args.seconds
        audio = [rng.standard_normal(int(s * 16_000)).astype(np.float32) * 0.1 for s in lengths]
    audio_seconds = sum(len(a) for a in audio) / 16_000

    # 1. FLOP limit.
    conv_flops, transformer_flops = flops_per_audio_second(model)
    total_flops = conv_flops + transformer_flops
    print(
        f"HuBERT-base-size model, 25 Hz, output layer {LAYER}: {conv_flops / 1e9:.2f} GFLOP (conv encoder) + "
        f"{transformer_flops / 1e9:.2f} GFLOP (transformer to layer {LAYER}) = {total_flops / 1e9:.2f} GFLOP "
        "per second of audio\n"
    )
    rates = {dtype: matmul_flop_rates(dtype) for dtype in (torch.float32, torch.bfloat16)}
    cores = os.cpu_count()
    print(
        f"| dtype | matmul GFLOP/s, wall ({args.threads} threads) | matmul GFLOP/s per CPU second | "
        f"FLOP limit per core (x real time) | FLOP limit, {cores} cores |\n|---|---|---|---|---|"
    )
    for dtype, (wall_rate, cpu_rate) in rates.items():
        print(
            f"| {str(dtype).removeprefix('torch.')} | {wall_rate / 1e9:.0f} | {cpu_rate / 1e9:.0f} | "
            f"{cpu_rate / total_flops:.1f} | {cores * cpu_rate / total_flops:.0f} |"
        )

    # 2. Throughput, round robin.
    fp32 = HubertFrontEnd(model, layer=LAYER)
    bf16 = HubertFrontEnd(model, layer=LAYER, autocast_dtype=torch.bfloat16)
    centroids = rng.standard_normal((500, 768)).astype(np.float32)  # replaced by a fitted codebook in 3.
    tokenizers = {"fp32": SpeechTokenizer(centroids, fp32), "bf16 autocast": SpeechTokenizer(centroids, bf16)}
    variants = {}
    for name, tokenizer in tokenizers.items():
        variants[f"{name}, one by one"] = lambda t=tokenizer: [t(a) for a in audio]
        variants[f"{name}, batched ({args.batch_size})"] = lambda t=tokenizer: t(audio, batch_size=args.batch_size)
    timer = ConvTimer(model.feature_extractor)
    for tokenizer in tokenizers.values():
        tokenizer(audio[:2])  # warm-up
    measured = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            timer.wall = timer.cpu = 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            measured[name].append((time.perf_counter() - wall, time.process_time() - cpu, timer.wall, timer.cpu))
    timer.remove()
    print(
        f"\n{len(audio)} utterances, {audio_seconds:.0f} s of audio ({'files' if args.audio else 'noise'}), "
        f"{args.threads} threads, medians of {args.repeats} round-robin repeats; load average at end: "
        f"{load_average()}\n"
    )
    print(
        "| variant | wall (s) | x real time | CPU (s) | x real time per CPU second | conv share (CPU) "
        "| ratio (wall) | ratio (CPU) | GFLOP per CPU second | of the fp32 / bf16 matmul rate |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    baseline = f"fp32, batched ({args.batch_size})"
    medians = {name: np.median(np.array(rows), axis=0) for name, rows in measured.items()}
    for name, (wall, cpu, _, conv_cpu) in medians.items():
        rate = total_flops * audio_seconds / cpu
        print(
            f"| {name} | {wall:.1f} | {audio_seconds / wall:.1f} | {cpu:.1f} | {audio_seconds / cpu:.1f} | "
            f"{conv_cpu / cpu:.0%} | {medians[baseline][0] / wall:.2f} | {medians[baseline][1] / cpu:.2f} | "
            f"{rate / 1e9:.0f} | {rate / rates[torch.float32][1]:.0%} / {rate / rates[torch.bfloat16][1]:.0%} |"
        )

    # 3. bf16 vs fp32 units with a codebook fitted on this audio's fp32 features.
    features = tokenizers["fp32"].extract_features(audio)
    bf16_features = tokenizers["bf16 autocast"].extract_features(audio)
    # A random model's frames are close together, so the codebook is sized to the frames (about 10 per unit).
    stacked = torch.cat(features)
    n_units = min(500, len(stacked) // 10)
    kmeans = MiniBatchKMeans(n_clusters=n_units, batch_size=max(1024, 3 * n_units), n_init=3, random_state=0)
    kmeans.fit(stacked.numpy())
    fitted = SpeechTokenizer(kmeans.cluster_centers_, fp32)
    units = torch.cat([fitted.quantize(f) for f in features])
    bf16_units = torch.cat([fitted.quantize(f) for f in bf16_features])
    change = torch.cat([(b - f).norm(dim=-1) for b, f in zip(bf16_features, features)])
    spread = (stacked - stacked.mean(0)).norm(dim=-1).mean()
    print(
        "\n| bf16 autocast vs fp32 | frames | units agreeing | median / max feature change, relative to the norm "
        "| ... relative to the spread of frames |\n|---|---|---|---|---|\n"
        f"| {n_units}-unit k-means on these fp32 features | {len(units)} | "
        f"{(units == bf16_units).float().mean():.2%} | {(change / stacked.norm(dim=-1)).median():.2%} / "
        f"{(change / stacked.norm(dim=-1)).max():.2%} | {change.median() / spread:.1%} |"
    )
    conv_encoder_variants(model, audio[:4], args.repeats, args.compile)
    if args.skip_chunking:
        return

    # 4. Chunked vs whole: a 60 s utterance, chunk limits below it.
    tokenizer = tokenizers["fp32"]
    long_audio = rng.standard_normal(60 * 16_000).astype(np.float32) * 0.1
    whole = tokenizer(long_audio, deduplicate=False)
    print(
        "\n| max_chunk_seconds | frames whole | frames chunked | units agreeing (aligned frames) |\n|---|---|---|---|"
    )
    for limit in (30.0, 10.0):
        chunked = SpeechTokenizer(tokenizer.centroids, fp32, max_chunk_seconds=limit)(long_audio, deduplicate=False)
        # Each chunk loses the frames whose receptive field would cross its end; align chunk by chunk.
        hop = int(limit * tokenizer.frame_rate)
        per_chunk = fp32.num_frames(int(limit * 16_000))
        aligned = np.concatenate([whole[i * hop : i * hop + per_chunk] for i in range(len(chunked) // per_chunk)])
        agree = (aligned == chunked[: len(aligned)]).mean()
        print(f"| {limit:.0f} | {len(whole)} | {len(chunked)} | {agree:.1%} |")


if __name__ == "__main__":
    main()
