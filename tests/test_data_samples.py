"""Sample builders: packing, interleaving, labels and input validation, on tiny synthetic data."""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest
import torch
from helpers import LAYOUT, TOKENIZER, make_speech_data, make_text_data

from smoltolk_hf.data.samples import (
    IGNORE_INDEX,
    InterleavedSampleBuilder,
    SpeechSampleBuilder,
    TextSampleBuilder,
    plan_runs,
    word_unit_bounds,
)


def modality_of(ids: np.ndarray) -> np.ndarray:
    """0 text, 1 speech, -1 marker, per position."""
    out = np.where(ids < LAYOUT.vocab_size, 0, 1)
    out[(ids == LAYOUT.text_marker_id) | (ids == LAYOUT.speech_marker_id)] = -1
    return out


def split_segments(ids: np.ndarray) -> list[tuple[str, list[int], bool]]:
    """(modality, ids, ends the utterance) for each run opened by a marker in a sample."""
    segments = []
    for token in ids.tolist():
        if token in (LAYOUT.text_marker_id, LAYOUT.speech_marker_id):
            segments.append(["text" if token == LAYOUT.text_marker_id else "speech", [], False])
        elif token in (TOKENIZER.eos_token_id, LAYOUT.speech_eos_id):
            if segments:
                segments[-1][2] = True
        elif segments:
            segments[-1][1].append(token)
    return [tuple(s) for s in segments]


def test_word_unit_bounds_partition_units():
    durations = np.array([2, 1, 3, 1])  # unit first frames: 0, 2, 3, 6
    bounds = word_unit_bounds(durations, [0.1, 0.2, 0.29], frame_rate=10.0)  # word ends at frames 1, 2, 3
    assert bounds.tolist() == [0, 1, 1, 2]  # word 0: unit 0; word 1: none; word 2: unit 1; unit 2.. trailing


def test_plan_runs_lengths_and_alternation():
    seen_first = set()
    for seed in range(30):
        rng = np.random.default_rng(seed)
        runs = plan_runs(200, 3, rng, text_words=(10, 30), speech_words=(5, 15))
        seen_first.add(runs[0].modality)
        assert runs[0].start == 3 and runs[-1].end == 200
        for previous, run in itertools.pairwise(runs):
            assert previous.end == run.start and previous.modality != run.modality
        for run in runs[:-1]:
            low, high = (10, 30) if run.modality == "text" else (5, 15)
            assert low <= run.end - run.start <= high
    assert seen_first == {"text", "speech"}


def test_interleaved_samples_runs_markers_and_units():
    dataset, word_units = make_speech_data(num_utterances=30)
    words_of = dataset["words"]
    utterance_end = {}  # global word index -> one past the last word of its utterance
    for words in words_of:
        last = int(words[-1][1:]) + 1
        utterance_end.update({int(w[1:]): last for w in words})
    builder = InterleavedSampleBuilder(dataset, LAYOUT, TOKENIZER, context_length=256)
    checked_speech, first_modalities = 0, set()
    for seed in range(25):
        sample = builder.build(np.random.default_rng(seed))
        ids, labels = sample["input_ids"].numpy(), sample["labels"].numpy()
        assert ids.shape == labels.shape == (256,)
        modality = modality_of(ids)
        # A marker at every switch, and the marker announces what follows it.
        assert modality[0] == -1
        for a, b in zip(range(len(ids) - 1), range(1, len(ids))):
            if modality[a] >= 0 and modality[b] >= 0:
                assert modality[a] == modality[b]
            if ids[a] == LAYOUT.text_marker_id and modality[b] >= 0:
                assert modality[b] == 0
            if ids[a] == LAYOUT.speech_marker_id and modality[b] >= 0:
                assert modality[b] == 1
        # Markers are never targets; everything else is.
        assert (labels[modality == -1] == IGNORE_INDEX).all()
        assert (labels[modality >= 0] == ids[modality >= 0]).all()
        assert not (ids == LAYOUT.speech_pad_id).any()

        segments = split_segments(ids)
        first_modalities.add(segments[0][0])
        complete = segments[:-1]  # the last one may be cut by the crop
        for i, (kind, segment_ids, ends_utterance) in enumerate(complete):
            if kind != "text" or i == 0:
                continue
            words = TOKENIZER.decode(segment_ids).split()
            assert ends_utterance or 10 <= len(words) <= 30
        for i, (kind, segment_ids, ends_utterance) in enumerate(complete):
            previous = segments[i - 1] if i else None
            if kind != "speech" or previous is None or previous[0] != "text" or previous[2]:
                continue
            first = int(TOKENIZER.decode(previous[1]).split()[-1][1:]) + 1
            following = segments[i + 1]
            if ends_utterance:
                end = utterance_end[first]
            else:
                end = int(TOKENIZER.decode(following[1]).split()[0][1:])
                assert 5 <= end - first <= 15
            expected = [u + LAYOUT.speech_token_offset for w in range(first, end) for u in word_units[w]]
            assert segment_ids == expected
            checked_speech += 1
    assert checked_speech >= 20
    assert first_modalities == {"text", "speech"}


def test_text_runs_have_leading_space_except_at_utterance_start():
    dataset, _ = make_speech_data(num_utterances=4)
    builder = InterleavedSampleBuilder(dataset, LAYOUT, TOKENIZER, context_length=64)
    checked = 0
    for seed in range(20):
        ids = builder.build(np.random.default_rng(seed))["input_ids"].tolist()
        for i in range(1, len(ids) - 1):
            if ids[i] == LAYOUT.text_marker_id and ids[i + 1] < LAYOUT.vocab_size:
                starts_utterance = ids[i - 1] in (TOKENIZER.eos_token_id, LAYOUT.speech_eos_id)
                assert TOKENIZER.decode(ids[i + 1 : i + 2]).startswith(" ") != starts_utterance
                checked += starts_utterance
    assert checked > 0


def test_speech_samples_pack_utterances_in_order():
    dataset, _ = make_speech_data(num_utterances=20)
    utterances = [tuple(u + LAYOUT.speech_token_offset for u in units) for units in dataset["units"]]
    builder = SpeechSampleBuilder(dataset, LAYOUT, context_length=300)
    for seed in range(10):
        sample = builder.build(np.random.default_rng(seed))
        ids = sample["input_ids"].tolist()
        assert len(ids) == 300 and ids[0] == LAYOUT.speech_marker_id
        assert all(LAYOUT.speech_token_offset <= i <= LAYOUT.speech_eos_id for i in ids[1:])
        assert sample["labels"][0] == IGNORE_INDEX and sample["labels"][1:].tolist() == ids[1:]
        chunks = " ".join(map(str, ids[1:])).split(str(LAYOUT.speech_eos_id))
        middle = [tuple(int(x) for x in chunk.split()) for chunk in chunks[1:-1]]
        assert len(middle) >= 2
        order = [utterances.index(chunk) for chunk in middle]
        assert all(b == (a + 1) % len(utterances) for a, b in itertools.pairwise(order))
        assert utterances[order[0] - 1][-len(chunks[0].split()) :] == tuple(int(x) for x in chunks[0].split())


@pytest.mark.parametrize("column", ["input_ids", "text"])
def test_text_samples_pack_documents_with_eos(column):
    dataset = make_text_data(num_documents=30, column=column)
    documents = [
        tuple(d)
        for d in TOKENIZER(list(make_text_data(30, column="text")["text"]), add_special_tokens=False)["input_ids"]
    ]
    builder = TextSampleBuilder(dataset, LAYOUT, TOKENIZER, context_length=200)
    for seed in range(10):
        sample = builder.build(np.random.default_rng(seed))
        ids = sample["input_ids"].tolist()
        assert len(ids) == 200 and sample["labels"].tolist() == ids and max(ids) < LAYOUT.vocab_size
        pieces, current = [], []
        for token in ids:
            if token == TOKENIZER.eos_token_id:
                pieces.append(tuple(current))
                current = []
            else:
                current.append(token)
        assert len(pieces) >= 3
        order = [documents.index(piece) for piece in pieces[1:]]
        assert all(b == (a + 1) % len(documents) for a, b in itertools.pairwise(order))
        assert documents[order[0] - 1][len(documents[order[0] - 1]) - len(pieces[0]) :] == pieces[0]


def test_pretokenized_start_is_uniform_over_tokens():
    # One document of ids 1..99 plus its EOS (0): the first id of a sample tells where it started.
    document = datasets.Dataset.from_dict({"input_ids": [list(range(1, 100))]})
    builder = TextSampleBuilder(document, LAYOUT, eos_id=0, context_length=4)
    firsts = [int(builder.build(np.random.default_rng(seed))["input_ids"][0]) for seed in range(3000)]
    counts = np.bincount(firsts, minlength=100)
    assert counts.min() > 5 and counts.max() < 70  # 30 expected for each of the 100 start positions


def test_builders_are_deterministic_for_a_generator():
    dataset, _ = make_speech_data()
    builder = InterleavedSampleBuilder(dataset, LAYOUT, TOKENIZER, context_length=128)
    a = builder.build(np.random.default_rng(7))["input_ids"]
    assert torch.equal(a, builder.build(np.random.default_rng(7))["input_ids"])
    assert not torch.equal(a, builder.build(np.random.default_rng(8))["input_ids"])


def test_unaligned_utterances_are_left_out_with_a_warning():
    dataset, _ = make_speech_data(num_utterances=10, unaligned=3)
    with pytest.warns(UserWarning, match="3 of 10 utterances"):
        builder = InterleavedSampleBuilder(dataset, LAYOUT, TOKENIZER, context_length=512)
    aligned_words = {w for words in dataset["words"][3:] for w in words}
    for seed in range(5):
        ids = builder.build(np.random.default_rng(seed))["input_ids"].tolist()
        for kind, segment, _ in split_segments(np.array(ids))[:-1]:  # the last may be cut mid-word
            if kind == "text":
                assert set(TOKENIZER.decode(segment).split()) <= aligned_words


def test_bad_inputs_raise():
    dataset, _ = make_speech_data(num_utterances=3)
    with pytest.raises(ValueError, match="durations"):
        InterleavedSampleBuilder(dataset.remove_columns("durations"), LAYOUT, TOKENIZER)
    with pytest.raises(ValueError, match="units"):
        SpeechSampleBuilder(dataset.remove_columns("units"), LAYOUT)
    with pytest.raises(ValueError, match="'text'"):
        TextSampleBuilder(dataset.remove_columns("text"), LAYOUT, TOKENIZER)
    with pytest.raises(ValueError, match="tokenizer"):
        TextSampleBuilder(dataset, LAYOUT)
    with pytest.raises(ValueError, match="empty"):
        SpeechSampleBuilder(dataset.select([]), LAYOUT)
    with pytest.raises(ValueError, match="too short"):
        SpeechSampleBuilder(dataset, LAYOUT, context_length=1)
    with pytest.raises(ValueError, match="no usable"), pytest.warns(UserWarning):
        InterleavedSampleBuilder(make_speech_data(3, unaligned=3)[0], LAYOUT, TOKENIZER)
    with pytest.raises(ValueError, match="speech_words"):
        InterleavedSampleBuilder(dataset, LAYOUT, TOKENIZER, speech_words=(5, 4))
    with pytest.raises(ValueError, match="EOS"):
        TextSampleBuilder(make_text_data(), LAYOUT, eos_id=LAYOUT.vocab_size)
