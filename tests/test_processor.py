"""SmolTolkProcessor: joint id layout, markers, padding, round trips, persistence, bad input."""

import numpy as np
import pytest
import torch
from helpers import SENTENCES

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.processing_smoltolk import SmolTolkProcessor
from smoltolk_hf.testing_utils import byte_level_tokenizer
from smoltolk_hf.tokenization_speech import MfccFrontEnd, SpeechTokenizer

N_UNITS = 12


@pytest.fixture(scope="module")
def speech_tokenizer():
    return SpeechTokenizer(np.random.default_rng(0).standard_normal((N_UNITS, 20)), MfccFrontEnd())


@pytest.fixture(scope="module")
def processor(speech_tokenizer):
    text_tokenizer = byte_level_tokenizer(SENTENCES)
    config = SmolTolkConfig(
        vocab_size=len(text_tokenizer) + 4,  # a padded embedding table: V need not equal len(tokenizer)
        num_speech_units=N_UNITS,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    processor = SmolTolkProcessor.from_config(text_tokenizer, speech_tokenizer, config)
    for name in ("text_marker_id", "speech_marker_id", "speech_token_offset", "speech_eos_id", "speech_pad_id"):
        assert getattr(processor, name) == getattr(config, name)
    return processor


def _audio(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * 16_000)).astype(np.float32) * 0.1


def _assert_segments_equal(got, expected):
    assert [m for m, _ in got] == [m for m, _ in expected]
    for (modality, a), (_, b) in zip(got, expected):
        if modality == "text":
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)


def test_markers_at_every_modality_change(processor):
    v, offset = processor.vocab_size, processor.speech_token_offset
    text_ids = processor.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    ids = processor(segments=[("text", "hello world"), ("speech", [3, 1]), ("text", "hello world")])["input_ids"]
    assert ids == text_ids + [v + 1, offset + 3, offset + 1, v] + text_ids
    ids = processor(units=[0, N_UNITS - 1], add_eos=True)["input_ids"]
    assert ids == [v + 1, offset, offset + N_UNITS - 1, processor.speech_eos_id]
    assert processor(text="hello world", add_eos=True)["input_ids"] == text_ids + [processor.tokenizer.eos_token_id]


def test_text_bos_starts_every_sequence(speech_tokenizer):
    processor = SmolTolkProcessor(byte_level_tokenizer(SENTENCES, bos_token="<s>"), speech_tokenizer)
    bos = processor.tokenizer.bos_token_id
    assert processor(text="hello")["input_ids"][0] == bos
    assert processor(units=[1, 2])["input_ids"][:2] == [bos, processor.speech_marker_id]


@pytest.mark.parametrize("first", ["text", "speech"])
def test_decode_inverts_encode(processor, speech_tokenizer, first):
    audio = _audio(1.0, seed=1)
    segments = [
        ("text", "the quick brown fox"),
        ("speech", audio),
        ("text", " how are you today?"),
        ("speech", np.array([5, 2, 2, 7])),
    ]
    if first == "speech":
        segments = segments[1:] + segments[:1]
    expected = [(m, speech_tokenizer(c) if m == "speech" and c.dtype == np.float32 else c) for m, c in segments]
    _assert_segments_equal(processor.decode(processor(segments=segments)["input_ids"]), expected)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_padding_and_tensors(processor, speech_tokenizer, padding_side):
    audio = [_audio(0.5, seed=2), _audio(1.5, seed=3)]
    batch = processor(audio=audio, padding_side=padding_side, return_tensors="pt")
    singles = [processor(audio=a)["input_ids"] for a in audio]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert isinstance(ids, torch.Tensor) and ids.shape == (2, max(len(s) for s in singles))
    for row, row_mask, single in zip(ids.tolist(), mask.tolist(), singles):
        fill = len(row) - len(single)
        pad = [processor.pad_token_id] * fill
        assert row == (single + pad if padding_side == "right" else pad + single)
        assert row_mask == (
            [1] * len(single) + [0] * fill if padding_side == "right" else [0] * fill + [1] * len(single)
        )
    decoded = processor.batch_decode(ids)
    for segments, a in zip(decoded, audio):
        _assert_segments_equal(segments, [("speech", speech_tokenizer(a))])
    texts = processor(text=["hello", "hello world, how are you"], return_tensors="np")
    assert texts["input_ids"].shape[0] == 2 and texts["attention_mask"].sum(1).tolist() == [
        len(processor.tokenizer(t)["input_ids"]) for t in ["hello", "hello world, how are you"]
    ]


def test_interleaved_batch_tokenizes_audio_once(processor, speech_tokenizer, monkeypatch):
    calls = []
    original = SpeechTokenizer.__call__
    monkeypatch.setattr(
        SpeechTokenizer, "__call__", lambda self, audio, **kw: calls.append(len(audio)) or original(self, audio, **kw)
    )
    batch = [
        [("speech", _audio(0.5, 4)), ("text", "hello")],
        [("text", "world"), ("speech", torch.tensor([1, 2]))],
        [("speech", _audio(0.7, 5))],
    ]
    out = processor(segments=batch)
    assert calls == [2] and len(out["input_ids"]) == 3


def test_save_and_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = SmolTolkProcessor.from_pretrained(tmp_path)
    assert loaded._id_layout() == processor._id_layout()
    segments = [("speech", _audio(0.6, 6)), ("text", "a speech language model")]
    assert loaded(segments=segments)["input_ids"] == processor(segments=segments)["input_ids"]


def test_bad_input(processor):
    with pytest.raises(ValueError, match="exactly one"):
        processor(text="hi", units=[1])
    with pytest.raises(ValueError, match=r"\[0, 12\)"):
        processor(units=[0, N_UNITS])
    with pytest.raises(ValueError, match="modality"):
        processor(segments=[("video", "x")])
    with pytest.raises(ValueError, match="non-empty"):
        processor(segments=[("text", "")])
    with pytest.raises(ValueError, match="outside the joint vocabulary"):
        processor.decode([processor.speech_pad_id + 1])
    units_only = SmolTolkProcessor(processor.tokenizer, num_speech_units=N_UNITS)
    with pytest.raises(ValueError, match="no speech tokenizer"):
        units_only(audio=_audio(0.5, 0))
    with pytest.raises(ValueError, match="units"):
        SmolTolkProcessor(processor.tokenizer, processor.speech_tokenizer, num_speech_units=N_UNITS + 1)
