"""Bad inputs to the data entry points (sample builders, collator) and the error each must give.

Each row of a table is (case id, what to call, exception type, fragments the message must contain); add rows
as new bad inputs are found. Nothing in a dataset is ever clipped, truncated or mapped onto another id.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DATA_NUM_UNITS, LAYOUT, TOKENIZER, make_speech_data, make_text_data

from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder

N = DATA_NUM_UNITS


def speech_with_units(row: int, units: list) -> object:
    """The tiny speech dataset with the units of `row` replaced."""
    dataset, _ = make_speech_data(num_utterances=3)
    rows = dataset.to_dict()
    rows["units"][row] = units
    rows["durations"][row] = [1] * len(units)
    return type(dataset).from_dict(rows)


def speech_with_all_units_empty() -> object:
    dataset, _ = make_speech_data(num_utterances=3)
    rows = dataset.to_dict()
    rows["units"] = [[] for _ in rows["units"]]
    rows["durations"] = [[] for _ in rows["durations"]]
    return type(dataset).from_dict(rows)


BUILDER_CASES = [
    # The unit one past the codebook would become the speech end token, +1 the pad, -1 `<|speech|>`.
    (
        "unit N",
        lambda: SpeechSampleBuilder(speech_with_units(1, [3, N]), LAYOUT),
        ["row 1", "'units'", f"{N}", f"[0, {N})"],
    ),
    ("unit N+1", lambda: SpeechSampleBuilder(speech_with_units(2, [N + 1]), LAYOUT), ["row 2", f"{N + 1}"]),
    ("unit -1", lambda: SpeechSampleBuilder(speech_with_units(0, [5, -1]), LAYOUT), ["row 0", "-1", f"[0, {N})"]),
    ("unit -3", lambda: SpeechSampleBuilder(speech_with_units(0, [-3]), LAYOUT), ["row 0", "-3"]),
    (
        "interleaved unit N+2",
        lambda: InterleavedSampleBuilder(speech_with_units(1, [N + 2] * 4), LAYOUT, TOKENIZER),
        ["InterleavedSampleBuilder", "row 1", f"{N + 2}"],
    ),
    (
        "float units",
        lambda: SpeechSampleBuilder(speech_with_units(0, [1.5, 2.0]), LAYOUT),
        ["'units'", "double", "row 0", "integer", "never truncated"],
    ),
    (
        "all units empty",
        lambda: SpeechSampleBuilder(speech_with_all_units_empty(), LAYOUT),
        ["empty list", "end tokens"],
    ),
    (
        "text id = vocab size",
        lambda: TextSampleBuilder(
            make_text_data().map(
                lambda row, i: {"input_ids": row["input_ids"] + ([LAYOUT.vocab_size] if i == 4 else [])},
                with_indices=True,
            ),
            LAYOUT,
            TOKENIZER,
        ),
        ["row 4", "'input_ids'", f"{LAYOUT.vocab_size}"],
    ),
]


@pytest.mark.parametrize("build, fragments", [case[1:] for case in BUILDER_CASES], ids=[c[0] for c in BUILDER_CASES])
def test_builders_refuse(build, fragments):
    with pytest.raises(ValueError) as caught:
        build()
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_valid_units_at_the_edges_are_accepted():
    SpeechSampleBuilder(speech_with_units(0, [0, N - 1]), LAYOUT, context_length=16)


COLLATOR_CASES = [
    (
        "id past the pad",
        [{"input_ids": [1, 2]}, {"input_ids": [1, LAYOUT.speech_pad_id + 1]}],
        ["feature 1", f"{LAYOUT.speech_pad_id + 1}"],
    ),
    ("negative id", [{"input_ids": [-1, 2], "dataset": "units/ls"}], ["feature 0", "'units/ls'", "-1"]),
    ("float ids", [{"input_ids": [1.5, 2.0]}], ["feature 0", "integer", "float"]),
    ("bool ids", [{"input_ids": [True, False]}], ["feature 0", "integer", "bool"]),
    ("2-D ids", [{"input_ids": [[1, 2]]}], ["feature 0", "1-D", "(1, 2)"]),
    ("empty ids", [{"input_ids": []}], ["feature 0", "non-empty"]),
    ("bad label", [{"input_ids": [1, 2], "labels": [1, -5]}], ["feature 0", "labels", "-5"]),
    ("label shape", [{"input_ids": [1, 2], "labels": [1]}], ["feature 0", "shape"]),
    ("no features", [], ["empty list"]),
]


@pytest.mark.parametrize(
    "features, fragments", [case[1:] for case in COLLATOR_CASES], ids=[c[0] for c in COLLATOR_CASES]
)
def test_collator_refuses(features, fragments):
    with pytest.raises(ValueError) as caught:
        SmolTolkDataCollator(LAYOUT)(features)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_collator_accepts_integer_tensors():
    batch = SmolTolkDataCollator(LAYOUT)([{"input_ids": torch.tensor([1, 2], dtype=torch.int32)}])
    assert batch["input_ids"].dtype == torch.long
