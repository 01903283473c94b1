"""A tiny word-aligned spoken corpus synthesised offline with espeak-ng.

Sentences come from Debian's `fortunes` files; audio and per-word timings come from
libespeak-ng (through ctypes) in synchronous mode: its word events give the sample at which
each word starts and its phoneme events give pauses, so a word ends where the next pause or
the next word begins. The output is a folder of 16-bit wav files (espeak-ng's native
22.05 kHz) plus `manifest.jsonl`, the manifest format that `tokenize_audio_dataset` reads.
Needs the Debian packages `espeak-ng` and `fortunes-min` (or `fortunes`).
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import soundfile as sf

FORTUNE_FILES = (
    "/usr/share/games/fortunes/fortunes",
    "/usr/share/games/fortunes/literature",
    "/usr/share/games/fortunes/riddles",
)
MANIFEST_NAME = "manifest.jsonl"

# espeak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_PARAM_RATE = 1

_PUNCTUATION = ".,;:!?\"'()-"
_SENTENCE_RE = re.compile(r"[^.!?]+[.!?]")
_ALLOWED_RE = re.compile(r"^[A-Za-z][A-Za-z ,;'\-]*[.!?]$")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position in the input
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakSynthesizer:
    """Text -> (int16 waveform, sample rate, words, word end times in seconds) with libespeak-ng."""

    def __init__(self, voice: str = "en-us"):
        path = ctypes.util.find_library("espeak-ng")
        if path is None:
            raise RuntimeError("libespeak-ng not found: install the Debian package `espeak-ng`")
        self._lib = ctypes.CDLL(path)
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sampling_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS
        )
        if self.sampling_rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int, bytes]] = []
        self._callback = _SynthCallback(self._on_audio)  # kept referenced: C holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wave, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wave, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            self._events.append(
                (e.type, e.text_position, e.length, e.sample, e.id.string if e.type == _EVENT_PHONEME else b"")
            )
            i += 1
        return 0

    def synthesize(self, text: str, rate: int = 175) -> tuple[np.ndarray, int, list[str], list[float]]:
        """Speaks `text` at `rate` words per minute; word ends are the first pause or next word start."""
        self._chunks, self._events = [], []
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        data = text.encode()
        if self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None) != 0:
            raise RuntimeError(f"espeak_Synth failed on {text!r}")
        self._lib.espeak_Synchronize()
        wave = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

        # Word events can split a written word ("long-term", "you're"): the words are the text's
        # whitespace-separated tokens, each ending at its last event's end.
        tokens = [(m.start(), m.end(), m.group().strip(_PUNCTUATION)) for m in re.finditer(r"\S+", text)]
        starts = [start for start, _, _ in tokens]
        token_ends: dict[int, int] = {}
        open_token = None  # the token whose last event has not yet met a pause or a following word
        for kind, position, length, sample, phoneme in self._events:
            if kind == _EVENT_WORD and length > 0:  # a zero-length word event closes the text
                if open_token is not None:
                    token_ends[open_token] = sample
                open_token = max(bisect.bisect_right(starts, position - 1) - 1, 0)
            elif kind == _EVENT_PHONEME and phoneme.startswith(b"_") and open_token is not None:
                token_ends[open_token] = sample
                open_token = None
        if open_token is not None:
            token_ends[open_token] = len(wave)
        # espeak-ng gives some unstressed words ("a") no event of their own: they are spoken inside
        # the previous word's span, so they end where it ends (zero duration).
        words, ends = [], []
        for i, (_, _, word) in enumerate(tokens):
            if word:
                words.append(word)
                ends.append(token_ends.get(i, ends[-1] if ends else 0))
        return wave, self.sampling_rate, words, [end / self.sampling_rate for end in ends]


def fortune_sentences(paths: Sequence[str] = FORTUNE_FILES, min_words: int = 4, max_words: int = 30) -> list[str]:
    """Plain English sentences from fortune files (letters and light punctuation only), deduplicated, in file order."""
    sentences: dict[str, None] = {}
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            entries = f.read().split("\n%\n")
        for entry in entries:
            # Attribution lines ("-- Author") are not part of the quote.
            body = " ".join(line.strip() for line in entry.splitlines() if not line.strip().startswith("--"))
            for sentence in _SENTENCE_RE.findall(" ".join(body.split())):
                sentence = sentence.strip()
                if _ALLOWED_RE.match(sentence) and min_words <= len(sentence.split()) <= max_words:
                    sentences[sentence] = None
    if not sentences:
        raise RuntimeError(f"no fortune files found at {list(paths)}: install the Debian package `fortunes-min`")
    return list(sentences)


def synthesize_corpus(
    out_dir: str | os.PathLike,
    n_utterances: int,
    seed: int = 0,
    sentences_per_utterance: tuple[int, int] = (1, 3),
    voice: str = "en-us",
) -> str:
    """Writes `n_utterances` synthetic spoken utterances and a word-aligned manifest to `out_dir`.

    Each utterance joins 1-3 random fortune sentences, spoken at a random rate (150-200 wpm).
    Manifest lines hold `id`, `audio` (wav path relative to `out_dir`), `text`, `words` and
    `word_end_times` (seconds). The output is deterministic for a seed (and espeak-ng version):
    libespeak-ng keeps state between utterances that shifts timings slightly, so synthesis runs
    in a fresh process each call.

    Returns:
        The path of the manifest.
    """
    out_dir = os.fspath(out_dir)
    arguments = json.dumps([out_dir, n_utterances, seed, list(sentences_per_utterance), voice])
    # Runs this file by path so the child does not import the (heavy) package, and through
    # `-c` so that this folder does not land on the child's sys.path.
    runner = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
    subprocess.run([sys.executable, "-c", runner, os.path.abspath(__file__), arguments], check=True)
    return os.path.join(out_dir, MANIFEST_NAME)


def _write_corpus(
    out_dir: str, n_utterances: int, seed: int, sentences_per_utterance: Sequence[int], voice: str
) -> None:
    os.makedirs(os.path.join(out_dir, "wav"), exist_ok=True)
    rng = random.Random(seed)
    sentences = fortune_sentences()
    synthesizer = EspeakSynthesizer(voice)
    with open(os.path.join(out_dir, MANIFEST_NAME), "w") as f:
        for index in range(n_utterances):
            text = " ".join(rng.sample(sentences, rng.randint(*sentences_per_utterance)))
            wave, sampling_rate, words, ends = synthesizer.synthesize(text, rate=rng.randint(150, 200))
            utterance_id = f"utt{index:06d}"
            audio = os.path.join("wav", f"{utterance_id}.wav")
            sf.write(os.path.join(out_dir, audio), wave, sampling_rate, subtype="PCM_16")
            row = {
                "id": utterance_id,
                "audio": audio,
                "text": text,
                "words": words,
                "word_end_times": [round(t, 5) for t in ends],
            }
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    _write_corpus(*json.loads(sys.argv[-1]))
