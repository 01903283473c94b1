"""Bad inputs to the speech entry points (SpeechTokenizer, SmolTolkProcessor) and the error each must give.

Each row of a table is (case id, what to call, fragments the message must contain); add rows as new bad inputs
are found. Every error is a `ValueError` whose message names the bad value and where it came from.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from helpers import NUM_UNITS, tiny_model_and_processor, waveform
from safetensors.torch import save_file

from smoltolk_hf import MfccFrontEnd, SpeechTokenizer
from smoltolk_hf.tokenization_speech import CENTROIDS_NAME


def centroids_with(row: int, value: float) -> np.ndarray:
    centroids = np.random.default_rng(0).standard_normal((NUM_UNITS, MfccFrontEnd().feature_dim)).astype(np.float32)
    centroids[row, 3] = value
    return centroids


def corrupt_saved_codebook(tmp_path) -> str:
    """A saved tokenizer whose centroids file holds an infinite value in unit 5."""
    folder = str(tmp_path / "codebook")
    SpeechTokenizer(centroids_with(0, 0.0), MfccFrontEnd()).save_pretrained(folder)
    save_file({"centroids": torch.from_numpy(centroids_with(5, np.inf))}, os.path.join(folder, CENTROIDS_NAME))
    return folder


CASES = [
    (
        "NaN centroid",
        lambda t: SpeechTokenizer(centroids_with(2, np.nan), MfccFrontEnd()),
        ["NaN or infinite", "units [2]"],
    ),
    ("inf centroid", lambda t: SpeechTokenizer(centroids_with(7, -np.inf), MfccFrontEnd()), ["units [7]", "corrupt"]),
    (
        "corrupt saved codebook",
        lambda t: SpeechTokenizer.from_pretrained(corrupt_saved_codebook(t)),
        [CENTROIDS_NAME, "units [5]", "fit it again"],
    ),
]

_, PROCESSOR = tiny_model_and_processor()
TOKENIZER = PROCESSOR.speech_tokenizer
WAVE = waveform(0.5)

CASES += [
    ("sampling rate 1", lambda t: TOKENIZER(WAVE, sampling_rate=1), ["sampling_rate=1 Hz", "resampled"]),
    ("PCM amplitude as float", lambda t: TOKENIZER(WAVE * 32767), ["[-1, 1]", "integer PCM", "32768"]),
    ("batch_size 0", lambda t: TOKENIZER([WAVE, WAVE], batch_size=0), ["batch_size", "got 0"]),
    ("bad audio names its index", lambda t: TOKENIZER([WAVE, WAVE * 100]), ["audio[1]", "peak"]),
    ("processor: empty text list", lambda t: PROCESSOR(text=[]), ["text=[]", "empty"]),
    ("processor: empty units list", lambda t: PROCESSOR(units=[]), ["units=[]", "empty"]),
    ("processor: empty audio list", lambda t: PROCESSOR(audio=[]), ["audio=[]", "empty"]),
    ("processor: decode -100", lambda t: PROCESSOR.decode([5, -100, 6]), ["-100", "position 1", "labels"]),
    ("processor: decode past the vocabulary", lambda t: PROCESSOR.decode([10_000]), ["10000", "outside"]),
]


def test_half_precision_audio_is_widened_exactly():
    wave = torch.from_numpy(WAVE).to(torch.bfloat16)
    assert np.array_equal(TOKENIZER(wave), TOKENIZER(wave.float().numpy()))


@pytest.mark.parametrize("call, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_speech_entry_points_refuse(call, fragments, tmp_path):
    with pytest.raises(ValueError) as caught:
        call(tmp_path)
    for fragment in fragments:
        assert fragment in str(caught.value)
