"""Benchmark loaders: released layouts, audio through the speech tokenizer, and clear errors on bad input."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import tiny_audio_eval_model

from smoltolk_hf.evaluation import (
    build_pairs,
    evaluate_items,
    load_benchmark,
    load_crossmodal_storycloze,
    load_sblimp,
    load_spoken_storycloze,
    tokenize_speech,
)

STORY = "a7d4c2e1-0000-4a4a-9b9b-123456789abc"


def _wav(path, seconds=0.3, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(
        path,
        (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32),
        16_000,
    )


def _text(path, text):
    path.write_text(text)


@pytest.fixture(scope="module")
def audio_processor():
    return tiny_audio_eval_model()


def test_spoken_storycloze_release_through_the_speech_tokenizer(tmp_path, audio_processor):
    model, processor = audio_processor
    for k, story in enumerate([STORY, "b1", "c2"]):
        _wav(tmp_path / f"{2 * k}_{story}_correct.wav", seed=2 * k)
        _wav(tmp_path / f"{2 * k + 1}_{story}_incorrect.wav", seed=2 * k + 1)
        _text(tmp_path / f"{2 * k}_{story}_correct.txt", "the cat sat on the mat")
        _text(tmp_path / f"{2 * k + 1}_{story}_incorrect.txt", "the mat sat on the cat")
    items = load_benchmark(tmp_path)
    assert [i.id for i in items] == [STORY, "b1", "c2"] and not items[0].context
    results = evaluate_items(model, processor, items)
    assert set(results) == {"S", "T"} and all(r["num_pairs"] == 3 for r in results.values())
    # Whole stories: cross-modal settings need the context apart.
    with pytest.raises(ValueError, match="whole utterance"):
        evaluate_items(model, processor, items, settings=["T->S"])
    units = tokenize_speech(items, processor.speech_tokenizer)
    np.testing.assert_array_equal(
        units[0].correct["speech"],
        processor.speech_tokenizer(items[0].correct["speech"]),
    )


def test_crossmodal_layout_gives_four_settings(tmp_path):
    for base in ("s0", "s1"):
        for role, seed in (("mutual", 0), ("correct", 1), ("incorrect", 2)):
            _wav(tmp_path / f"{base}_{role}.wav", seed=seed)
            _text(tmp_path / f"{base}_{role}.txt", f"{role} words here")
    items = load_crossmodal_storycloze(tmp_path)
    assert [i.id for i in items] == ["s0", "s1"]
    pair = build_pairs(items, "T->S")[0]
    assert pair.context == [("text", "mutual words here")] and pair.correct[0][0] == "speech"
    (tmp_path / "s1_incorrect.wav").unlink()
    with pytest.raises(ValueError, match="s1_incorrect.wav is missing"):
        load_benchmark(tmp_path)


def test_release_layout_errors_name_the_file(tmp_path):
    _wav(tmp_path / f"0_{STORY}_correct.wav")
    with pytest.raises(ValueError, match=f"0_{STORY}_correct.wav has no incorrect counterpart"):
        load_spoken_storycloze(tmp_path)
    _wav(tmp_path / f"1_{STORY}_incorrect.wav")
    _wav(tmp_path / "stray.wav")
    with pytest.raises(ValueError, match="stray.wav: not a Spoken StoryCloze file name"):
        load_spoken_storycloze(tmp_path)


def test_empty_transcript_and_unknown_layout(tmp_path):
    for role in ("mutual", "correct", "incorrect"):
        _text(tmp_path / f"s0_{role}.txt", "" if role == "correct" else "some words")
    with pytest.raises(ValueError, match="empty transcript: .*s0_correct.txt"):
        load_benchmark(tmp_path)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    _wav(unknown / "hello.wav")
    with pytest.raises(ValueError, match=f"{unknown}: unknown benchmark layout"):
        load_benchmark(unknown)


def test_sblimp_gold_pairs_groups_and_missing_wav(tmp_path, audio_processor):
    model, processor = audio_processor
    rows = ["filename,id,voice,type,subtype,correct,transcription"]
    for pair_id, kind in (
        (1, "anaphor_agreement"),
        (2, "anaphor_agreement"),
        (3, "island_effects"),
    ):
        for voice in ("V1", "V2"):
            rows.append(f"f{pair_id}{voice}c,{pair_id},{voice},{kind},x,1,the cat sat")
            rows.append(f"f{pair_id}{voice}i,{pair_id},{voice},{kind},x,0,cat the sat")
    (tmp_path / "gold.csv").write_text("\n".join(rows) + "\n")
    for seed, name in enumerate(row.split(",")[0] for row in rows[1:]):
        _wav(tmp_path / f"{name}.wav", seed=seed)
    items = load_sblimp(tmp_path)
    assert len(items) == 6 and {i.group for i in items} == {
        "anaphor_agreement",
        "island_effects",
    }
    result = evaluate_items(model, processor, items)
    assert set(result) == {"S", "T"}
    assert set(result["S"]["group_accuracies"]) == {
        "anaphor_agreement",
        "island_effects",
    }
    (tmp_path / "f3V2i.wav").unlink()
    with pytest.raises(FileNotFoundError, match="f3V2i.wav"):
        evaluate_items(model, processor, load_sblimp(tmp_path), settings=["S"])
    (tmp_path / "gold.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="f3V2c has no incorrect counterpart"):
        load_sblimp(tmp_path)


def test_manifest_with_units_and_storycloze_csv(tmp_path):
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text(
        json.dumps(
            {
                "id": "a",
                "context_units": [1, 2],
                "correct_units": [3],
                "incorrect_units": [4],
                "context_text": "x",
                "correct_text": "y",
                "incorrect_text": "z",
            }
        )
        + "\n"
    )
    items = load_benchmark(manifest)
    assert build_pairs(items, "T->S")[0].correct[0][0] == "speech"
    manifest.write_text(json.dumps({"id": "b", "correct_text": "y"}) + "\n")
    with pytest.raises(ValueError, match="pairs.jsonl, line 1: no incorrect_text"):
        load_benchmark(manifest)
    csv_path = tmp_path / "cloze.csv"
    csv_path.write_text(
        "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
        "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
        "id1,One.,Two.,Three.,Four.,Wrong end.,Right end.,2\n"
    )
    (item,) = load_benchmark(csv_path)
    assert item.correct == {"text": "Right end."} and item.context["text"] == "One. Two. Three. Four."
    assert build_pairs([item], "T")[0].correct == [("text", " Right end.")]
