"""Tiny espeak-ng corpus and `tokenize_audio_dataset` (columns, alignment, resume, manifests)."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from smoltolk_hf.data import prepare
from smoltolk_hf.data.prepare import UNIT_DATASET_COLUMNS, read_audio_source, tokenize_audio_dataset
from smoltolk_hf.tokenization_speech import MfccFrontEnd, SpeechTokenizer

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not os.path.exists("/usr/share/games/fortunes/fortunes"),
    reason="needs the Debian packages espeak-ng and fortunes-min",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from smoltolk_hf.demo.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    return synthesize_corpus(out, 5, seed=3)


def test_corpus_is_word_aligned_and_deterministic(corpus, tmp_path):
    from smoltolk_hf.demo.corpus import synthesize_corpus

    rows = [json.loads(line) for line in Path(corpus).read_text().splitlines()]
    assert len(rows) == 5 and len({r["text"] for r in rows}) == 5
    for row in rows:
        wave, rate = sf.read(os.path.join(os.path.dirname(corpus), row["audio"]))
        ends = np.array(row["word_end_times"])
        assert rate == 22050 and wave.ndim == 1
        assert row["words"] == [w.strip(".,;:!?\"'()-") for w in row["text"].split()]
        assert len(ends) == len(row["words"]) and (np.diff(ends) >= 0).all()
        assert 0 < ends[0] and ends[-1] <= len(wave) / rate + 1e-4
        # espeak-ng closes a sentence with a pause: the last word ends before the audio does.
        assert ends[-1] < len(wave) / rate
    again = synthesize_corpus(tmp_path, 2, seed=3)
    assert Path(again).read_text().splitlines() == Path(corpus).read_text().splitlines()[:2]
    wav = rows[1]["audio"]
    assert (tmp_path / wav).read_bytes() == (Path(corpus).parent / wav).read_bytes()


def test_tokenize_dataset_columns_and_resume(corpus, tmp_path, monkeypatch):
    rows = read_audio_source(corpus)
    tokenizer = SpeechTokenizer.train([r["audio"] for r in rows], 16, MfccFrontEnd())
    dataset = tokenize_audio_dataset(corpus, tmp_path / "units", tokenizer, shard_size=2, keep_shards=True)
    assert tuple(dataset.column_names) == UNIT_DATASET_COLUMNS and len(dataset) == 5
    for example, row in zip(dataset, rows):
        units, durations = tokenizer(row["audio"], return_durations=True)
        assert example["id"] == row["id"] and example["text"] == row["text"] and example["words"] == row["words"]
        assert example["units"] == units.tolist() and example["durations"] == durations.tolist()
        np.testing.assert_allclose(example["word_end_times"], row["word_end_times"])
        assert example["frame_rate"] == 25.0
        assert sum(example["durations"]) == len(tokenizer(row["audio"], deduplicate=False))

    # Resume: only the missing shard is tokenized again.
    shutil.rmtree(tmp_path / "units.shards" / "shard-00001")
    calls = []
    original = prepare._tokenize_rows
    monkeypatch.setattr(prepare, "_tokenize_rows", lambda rows, *a: calls.append(len(rows)) or original(rows, *a))
    resumed = tokenize_audio_dataset(corpus, tmp_path / "units", tokenizer, shard_size=2)
    assert calls == [2] and resumed["units"] == dataset["units"]
    assert not (tmp_path / "units.shards").exists()


def test_folder_and_csv_sources(corpus, tmp_path):
    folder = os.path.join(os.path.dirname(corpus), "wav")
    rows = read_audio_source(folder)
    assert [r["id"] for r in rows] == [f"utt00000{i}" for i in range(5)] and all("text" not in r for r in rows)
    csv_path = tmp_path / "manifest.csv"
    csv_path.write_text(
        f"audio,text,words,word_end_times\n{os.path.join(folder, 'utt000000.wav')},hi there,hi there,0.2 0.5\n"
    )
    (row,) = read_audio_source(csv_path)
    assert row["words"] == ["hi", "there"] and row["word_end_times"] == [0.2, 0.5] and row["id"].endswith("utt000000")
    csv_path.write_text("audio,words,word_end_times\nx.wav,hi there,0.2\n")
    with pytest.raises(ValueError, match="2 words but 1 word end times"):
        read_audio_source(csv_path)
