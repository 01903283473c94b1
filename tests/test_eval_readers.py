"""Readers of the released benchmark data (the authors' cross-modal format, ZeroSpeech sBLIMP, TWIST's Spoken
StoryCloze) on small fixtures written in each format, and `smoltolk eval` on all of them."""

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import EVAL_NUM_UNITS, EVAL_SENTENCES, tiny_audio_eval_model

from smoltolk_hf.evaluation import build_pairs, evaluate_items, load_authors_crossmodal, load_benchmark, load_sblimp
from smoltolk_hf.evaluation.cli import cli_eval
from smoltolk_hf.evaluation.scoring import ScoringOptions, encode_pair
from smoltolk_hf.hub import model_card


def write_authors_format(folder, tokenizer, n_pairs=3, seed=0, swap=()):
    """`cross-modal_manifest.csv` + smollm/ and mhubert25hzl11/ `test.bin`/`test.len`, as the authors' script reads
    them: text ids (uint16, lengths uint64) and units (uint16, lengths uint16), each row ending with its EOS.
    Pairs in `swap` list their incorrect continuation before the correct one. Returns the rows."""
    rng = np.random.default_rng(seed)
    rows = []  # (pair_id, type, correctness, text ids, units)
    for p in range(n_pairs):
        order = ("incorrect", "correct") if p in swap else ("correct", "incorrect")
        for kind, correctness in (("prompt", "-"), ("continuation", order[0]), ("continuation", order[1])):
            sentence = EVAL_SENTENCES[(p + len(rows)) % len(EVAL_SENTENCES)]
            text = tokenizer((" " if kind == "continuation" else "") + sentence, add_special_tokens=False)
            units = rng.integers(0, EVAL_NUM_UNITS, size=int(rng.integers(3, 8))).tolist()
            rows.append((f"story{p}", kind, correctness, text["input_ids"] + [0], units + [EVAL_NUM_UNITS]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cross-modal_manifest.csv").write_text(
        "pair_id,type,correctness\n" + "".join(f"{r[0]},{r[1]},{r[2]}\n" for r in rows)
    )
    for name, column, len_dtype in (("smollm", 3, np.uint64), ("mhubert25hzl11", 4, np.uint16)):
        (folder / name).mkdir(exist_ok=True)
        np.concatenate([np.asarray(r[column], dtype=np.uint16) for r in rows]).tofile(folder / name / "test.bin")
        np.asarray([len(r[column]) for r in rows], dtype=len_dtype).tofile(folder / name / "test.len")
    return rows


def _wav(path, seconds=0.3, seed=0):
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32), 16_000)


def write_sblimp(root, splits=("dev", "test")):
    """sLM21 `syntactic/<split>/gold.csv` + wavs; id 1 is reused by two types (the toolkit keys on type too)."""
    for s, split in enumerate(splits):
        folder = root / "syntactic" / split
        folder.mkdir(parents=True)
        rows = ["filename,type,subtype,correct,id,voice,transcription"]
        for pair_id, kind in ((1, "anaphor_agreement"), (2, "anaphor_agreement"), (1, "island_effects")):
            for voice in ("V1", "V2"):
                stem = f"{split}{kind[:3]}{pair_id}{voice}"
                rows.append(f"{stem}c,{kind},x,1,{pair_id},{voice},the cat sat")
                rows.append(f"{stem}i,{kind},x,0,{pair_id},{voice},cat the sat")
        (folder / "gold.csv").write_text("\n".join(rows) + "\n")
        for k, row in enumerate(rows[1:]):
            _wav(folder / f"{row.split(',')[0]}.wav", seed=10 * s + k)


def write_twist_release(folder, n=3):
    """TWIST's sSC layout: whole stories `<k>_<id>_correct.wav` / `<k+1>_<id>_incorrect.wav`."""
    folder.mkdir(parents=True)
    for k in range(n):
        _wav(folder / f"{2 * k}_story{k}_correct.wav", seed=2 * k)
        _wav(folder / f"{2 * k + 1}_story{k}_incorrect.wav", seed=2 * k + 1)


@pytest.fixture(scope="module")
def audio_model():
    return tiny_audio_eval_model()


def test_authors_format_rows_settings_and_prefix_rows(tmp_path, audio_model):
    _, processor = audio_model
    rows = write_authors_format(tmp_path / "tcloze", processor.tokenizer, n_pairs=4, swap=(1,))
    items = load_authors_crossmodal(tmp_path / "tcloze")
    assert [i.id for i in items] == [f"story{p}" for p in range(4)]
    second = items[1]  # its incorrect continuation is manifest row 4, the correct one row 5
    assert second.rows == {"correct": 5, "incorrect": 4}
    np.testing.assert_array_equal(second.correct["text"], rows[5][3][:-1])  # EOS dropped, as theirs
    np.testing.assert_array_equal(second.context["speech"], rows[3][4][:-1])
    # S->T prefixes: their draws over the manifest's continuation rows (1, 2, 4, 5, ...), third pass.
    continuation_rows = [i for i, r in enumerate(rows) if r[1] == "continuation"]
    rng = np.random.default_rng(42)
    for _ in range(3):
        drawn = []
        for item in items:
            for role in ("correct", "incorrect"):
                while (row := rng.choice(continuation_rows)) == item.rows[role]:
                    pass
                drawn.append(int(row))
    pairs = build_pairs(items, "S->T")
    for k, pair in enumerate(pairs):
        for c in range(2):
            ids, _ = encode_pair(processor, pair, ScoringOptions())[c]
            assert ids[:10] == rows[drawn[2 * k + c]][3][-10:]  # last 10 text tokens, the EOS included
            assert ids[10] == rows[4 * 0 + 3 * k][4][0] + processor.speech_token_offset  # speech right after
    assert load_benchmark(tmp_path / "tcloze" / "cross-modal_manifest.csv")[0].id == "story0"


def test_authors_format_errors(tmp_path, audio_model):
    _, processor = audio_model
    write_authors_format(tmp_path, processor.tokenizer)
    with pytest.raises(ValueError, match="no speech or text features for split 'dev'"):
        load_authors_crossmodal(tmp_path, split="dev")
    np.asarray([3, 3], dtype=np.uint64).tofile(tmp_path / "smollm" / "test.len")
    with pytest.raises(ValueError, match="test.len: 16 bytes for 9 manifest rows"):
        load_authors_crossmodal(tmp_path)


def test_sblimp_test_split_by_default_and_ids_across_types(tmp_path, audio_model):
    model, processor = audio_model
    write_sblimp(tmp_path)
    items = load_benchmark(tmp_path / "syntactic")
    assert len(items) == 6 and all("test" in i.sources[("correct", "speech")] for i in items)
    assert {i.base_id for i in items} == {"anaphor_agreement/x/1", "anaphor_agreement/x/2", "island_effects/x/1"}
    assert all("dev" in i.sources[("correct", "speech")] for i in load_benchmark(tmp_path, split="dev"))
    result = evaluate_items(model, processor, items, ["S"], benchmark="blimp")["S"]
    assert (result["ties"], result["average"], result["scope"]) == ("half", "macro", "whole utterance")
    assert set(result["group_accuracies"]) == {"anaphor_agreement", "island_effects"}
    with pytest.raises(FileNotFoundError, match="no sBLIMP gold.csv"):
        load_sblimp(tmp_path / "syntactic", split="train")


def test_eval_gives_a_table1_row_from_every_released_format(tmp_path, audio_model):
    model, processor = audio_model
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    write_authors_format(tmp_path / "tcloze_multimodal", processor.tokenizer)
    write_sblimp(tmp_path / "sLM21")
    write_twist_release(tmp_path / "sSC")
    argv = [str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--name", "tiny"]
    argv += ["--tstorycloze", str(tmp_path / "tcloze_multimodal"), "--sstorycloze", str(tmp_path / "sSC")]
    assert cli_eval(argv + ["--sblimp", str(tmp_path / "sLM21" / "syntactic")]) == 0
    (result,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(result["tstorycloze"]) == {"T", "S", "T->S", "S->T"} and set(result["blimp"]) == {"S", "T"}
    assert set(result["sstorycloze"]) == {"S"}
    details = result["details"]
    assert details["tstorycloze"]["format"] == "authors' cross-modal format"
    assert details["sstorycloze"]["S"]["scope"] == "whole utterance"
    assert details["blimp"]["S"]["ties"] == "half" and details["blimp"]["S"]["num_pairs"] == 6
    row = (tmp_path / "out" / "results.md").read_text().splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "tiny" and all(c != "-" for c in cells[1:7]) and cells[8] != "-"  # BLIMP, tSC x4, sSC S
    # The model card says how each benchmark was scored (without the local data paths).
    card = model_card(model, "tiny", results=tmp_path / "out" / "results.json").text
    assert "sStoryCloze: protocol authors; scored on S: whole utterance; ties wrong, micro average" in card
    assert "BLIMP: protocol authors" in card and "ties half, macro average" in card and str(tmp_path) not in card
