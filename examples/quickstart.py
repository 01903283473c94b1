"""Quickstart: load SmolTolk with `from_pretrained`, encode prompts with its processor, continue them with the
`speech-continuation` pipeline (text, audio, units, batches, streaming). Runs offline.

    python examples/quickstart.py                # SmolTolk-150M built from the embedded SmolLM2-135M backbone
    python examples/quickstart.py --model DIR    # a saved SmolTolk folder with its processor (`smoltolk export`)
    python examples/quickstart.py --tiny         # a tiny random model: runs in seconds

Without --model, the script first writes a checkpoint folder as you would have one after training: the model and
its processor (the backbone's text tokenizer and a speech tokenizer). No HuBERT installs offline, so the speech
tokenizer here is the MFCC stand-in fitted on synthetic audio, and a freshly built SmolTolk's speech parts are
untrained: expect random-looking units. Its text continuations are SmolLM2's own.
"""

from __future__ import annotations

import argparse
import tempfile
import threading

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, pipeline

import smoltolk_hf  # registers SmolTolk with the Auto classes and the "speech-continuation" pipeline
from smoltolk_hf import MfccFrontEnd, SmolTolkForCausalLM, SmolTolkProcessor, SpeechTokenizer
from smoltolk_hf.pipeline_speech_continuation import SmolTolkStreamer
from smoltolk_hf.testing_utils import byte_level_tokenizer

SAMPLING_RATE = 16_000
TINY_SENTENCE = "once upon a time there was a little fox who liked to talk and sing in the forest"


def synthetic_speech(seconds: float, seed: int) -> np.ndarray:
    """A stand-in for recorded speech: gliding harmonic tones with noise, 16 kHz float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    pitch = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLING_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.3 * wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def tiny_backbone() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A tiny random Llama and a byte-level BPE tokenizer trained on one sentence, for a fast run."""
    tokenizer = byte_level_tokenizer([TINY_SENTENCE])
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, eos_token_id=0, bos_token_id=None,
        tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), tokenizer


def build_checkpoint(out_dir: str, tiny: bool = False) -> str:
    """Writes a SmolTolk model and its processor to `out_dir` (what a training run leaves behind)."""
    if tiny:
        backbone, tokenizer = tiny_backbone()
        num_units = 20
    else:
        backbone, tokenizer = smoltolk_hf.load_embedded_backbone()  # SmolLM2-135M-Instruct, converted once
        num_units = 500
    torch.manual_seed(0)
    model = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=num_units)
    audio = [synthetic_speech(4.0, seed) for seed in range(8)]  # 800 MFCC frames: enough for 500 centroids
    speech_tokenizer = SpeechTokenizer.train(audio, num_units, MfccFrontEnd(), seed=0)
    processor = SmolTolkProcessor.from_config(tokenizer, speech_tokenizer, model.config)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a saved SmolTolk folder with its processor")
    parser.add_argument("--tiny", action="store_true", help="build a tiny random model instead of SmolTolk-150M")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or build_checkpoint(scratch, tiny=args.tiny)

        print("== 1. Load the model and its processor")
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # a SmolTolkForCausalLM
        processor = SmolTolkProcessor.from_pretrained(model_dir)
        config = model.config
        print(
            f"{type(model).__name__}: {model.num_parameters() / 1e6:.1f}M parameters, {config.num_speech_units} units"
        )

        print("\n== 2. The processor: text, audio and units in one id space (a marker at every modality change)")
        wave = synthetic_speech(1.0, seed=100)
        encoded = processor(segments=[("text", "once upon a time"), ("speech", wave)])
        print(f"{len(encoded['input_ids'])} joint ids: {encoded['input_ids'][:12]} ...")
        print("decoded back:", processor.decode(encoded["input_ids"]))

        print("\n== 3. The speech-continuation pipeline")
        pipe = pipeline("speech-continuation", model=model, processor=processor, device="cpu")
        # Generation keyword arguments pass through to generate(); min_new_tokens keeps an untrained speech head
        # from ending a continuation at once. Sampling follows the authors' settings for each modality.
        n = dict(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens)
        results = {
            "text -> text": pipe("once upon a time", do_sample=False, **n),
            "text -> speech": pipe("once upon a time", continuation="speech", seed=0, **n),
            "audio -> speech": pipe({"audio": wave, "sampling_rate": SAMPLING_RATE}, seed=0, **n),
            "audio -> text": pipe(wave, continuation="text", seed=0, **n),
        }
        for name, result in results.items():
            print(f"{name}: {result}")
        batch = pipe([[3, 1, 4, 1, 5], "there was a little fox"], batch_size=2, seed=0, **n)
        print("a batch (unit prompt, text prompt):", batch)

        print("\n== 4. Streaming: pieces arrive while generate() runs")
        streamer = SmolTolkStreamer(processor)
        kwargs = dict(continuation="speech", seed=0, streamer=streamer, **n)
        thread = threading.Thread(target=pipe, args=("once upon a time",), kwargs=kwargs)
        thread.start()
        pieces = list(streamer)
        thread.join()
        print(f"{len(pieces)} pieces: {pieces[:8]} ...")
        return {**results, "batch": batch, "pieces": pieces}


if __name__ == "__main__":
    main()
