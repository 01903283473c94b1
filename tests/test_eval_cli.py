"""`smoltolk eval` end to end on a saved tiny model and the demo evaluation."""

import json
import os

import numpy as np
from datasets import Dataset
from helpers import EVAL_NUM_UNITS, EVAL_SENTENCES, tiny_eval_model

from smoltolk_hf.data.prepare import UNIT_DATASET_FEATURES
from smoltolk_hf.demo.evaluation import (
    cloze_items_from_corpus,
    run_demo_evaluation,
)
from smoltolk_hf.evaluation.cli import cli_eval
from smoltolk_hf.evaluation.representations import default_dadapy_python


def units_dataset(n: int = 6, seed: int = 0) -> Dataset:
    """Word-aligned utterances: each word lasts 2-4 units of 1-3 frames at 25 Hz."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in UNIT_DATASET_FEATURES}
    for i in range(n):
        words = EVAL_SENTENCES[i % len(EVAL_SENTENCES)].split()
        units, durations, ends, frames = [], [], [], 0
        for _ in words:
            for _ in range(int(rng.integers(2, 5))):
                units.append(int(rng.integers(0, EVAL_NUM_UNITS)))
                durations.append(int(rng.integers(1, 4)))
                frames += durations[-1]
            ends.append(frames / 25.0)
        for key, value in (
            ("id", f"utt{i}"),
            ("units", units),
            ("durations", durations),
            ("text", " ".join(words)),
            ("words", words),
            ("word_end_times", ends),
            ("frame_rate", 25.0),
        ):
            rows[key].append(value)
    return Dataset.from_dict(rows, features=UNIT_DATASET_FEATURES)


def test_cli_writes_table1_report(tmp_path):
    model, processor = tiny_eval_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    manifest = tmp_path / "tsc.jsonl"
    items = cloze_items_from_corpus(units_dataset())
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "id": it.id,
                    **{
                        f"{role}_{k}": (v.tolist() if k == "units" else v)
                        for role in ("context", "correct", "incorrect")
                        for k, v in (
                            ("text", getattr(it, role)["text"]),
                            ("units", getattr(it, role)["speech"]),
                        )
                    },
                }
            )
            + "\n"
            for it in items
        )
    )
    units_dataset().save_to_disk(tmp_path / "units")
    assert (
        cli_eval(
            [
                str(tmp_path / "model"),
                "--out",
                str(tmp_path / "out"),
                "--tstorycloze",
                str(manifest),
                "--speech-nll",
                str(tmp_path / "units"),
                "--segmentation",
                str(tmp_path / "units"),
                "--batch-size",
                "4",
                "--name",
                "tiny",
            ]
        )
        == 0
    )
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| Model | BLIMP T | BLIMP S | tStoryCloze T | tStoryCloze S | tStoryCloze T→S |" in markdown
    (result,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(result["tstorycloze"]) == {"S", "T", "T->S", "S->T"}
    assert result["details"]["tstorycloze"]["S"]["num_pairs"] == len(items)
    assert result["speech_nll"] > 0 and 0 <= result["segmentation"]["r_value"] <= 1
    assert result["options"] == {
        "reduction": "mean",
        "scope": "continuation",
        "ties": None,
        "average": None,
        "batch_size": 4,
        "protocol": "authors",
        "prefix_tokens": 10,
        "seed": 42,
    }
    details = result["details"]["tstorycloze"]
    assert details["format"] == "pair manifest" and details["S->T"]["scope"] == "continuation"
    assert (details["S"]["ties"], details["S"]["average"]) == ("wrong", "micro")
    assert "tStoryCloze: protocol authors; scored on T: continuation" in markdown


def test_demo_evaluation(tmp_path, capsys):
    model, processor = tiny_eval_model()
    result = run_demo_evaluation(model, processor, units_dataset(), tmp_path)
    assert set(result["accuracy"]) == {"S", "T", "T->S", "S->T"} and result["num_pairs"] == 6
    with open(result["figure"], "rb") as f:
        assert f.read(4) == b"\x89PNG"
    assert "T→S" in capsys.readouterr().out


def test_cli_representations_writes_figures_3_4_5(tmp_path):
    model, processor = tiny_eval_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    units_dataset(12).save_to_disk(tmp_path / "units")
    argv = [str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--representations", str(tmp_path / "units")]
    assert cli_eval(argv) == 0
    (result,) = json.loads((tmp_path / "out" / "results.json").read_text())
    figures = result["details"]["representations"]
    layers = model.config.num_hidden_layers
    assert figures["num_samples"] == 12 and len(figures["subspace_overlap"]) == layers
    assert all(0.0 <= layer["mean"] <= 1.0 + 1e-9 for layer in figures["subspace_overlap"])
    names = ["figure4", "figure5"] + (["figure3"] if os.path.isfile(default_dadapy_python()) else [])
    for name in names:
        with open(figures[name], "rb") as f:
            assert f.read(4) == b"\x89PNG"
    if "figure3" not in names:
        assert figures["figure3"] is None and "dadapy" in figures["figure3_skipped"]
    else:
        assert len(figures["intrinsic_dimension"]["speech"]) == layers
