"""SmolTolkDataCollator: stacking packed samples, padding variable-length ones, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.data.collator import SmolTolkDataCollator

LAYOUT = SmolTolkConfig(vocab_size=100, num_speech_units=10)  # markers 100, 101; units 102..111; eos 112; pad 113
SPEECH = [LAYOUT.speech_marker_id, 102, 105, LAYOUT.speech_eos_id]
TEXT = [5, 6, LAYOUT.speech_marker_id, 103, 104, 107]


def test_packed_samples_are_stacked_without_a_mask():
    features = [{"input_ids": torch.tensor(TEXT), "labels": torch.tensor(TEXT)} for _ in range(3)]
    batch = SmolTolkDataCollator(LAYOUT)(features)
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].shape == (3, 6) and batch["input_ids"].dtype == torch.long
    assert torch.equal(batch["labels"][0], torch.tensor(TEXT))


@pytest.mark.parametrize("side", ["right", "left"])
def test_variable_lengths_are_padded(side):
    features = [{"input_ids": SPEECH}, {"input_ids": np.array(TEXT)}]
    batch = SmolTolkDataCollator(LAYOUT, padding_side=side, pad_to_multiple_of=4)(features)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, 8)
    real = slice(0, 4) if side == "right" else slice(4, 8)
    pad = slice(4, 8) if side == "right" else slice(0, 4)
    assert batch["input_ids"][0, real].tolist() == SPEECH
    assert (batch["input_ids"][0, pad] == LAYOUT.speech_pad_id).all()
    assert (batch["labels"][0, pad] == -100).all() and (batch["attention_mask"][0, pad] == 0).all()
    assert batch["attention_mask"][0, real].tolist() == [1] * 4 and batch["attention_mask"][1].sum() == 6
    # Labels default to the ids with markers masked.
    assert batch["labels"][0, real].tolist() == [-100, 102, 105, LAYOUT.speech_eos_id]


def test_pad_to_multiple_pads_equal_lengths_too():
    batch = SmolTolkDataCollator(LAYOUT, pad_token_id=0, pad_to_multiple_of=8)([{"input_ids": TEXT}] * 2)
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"][0, 6:].tolist() == [0, 0]
    assert batch["attention_mask"][:, 6:].sum() == 0


def test_bad_inputs_raise():
    collate = SmolTolkDataCollator(LAYOUT)
    with pytest.raises(ValueError, match="joint ids"):
        collate([{"input_ids": [5, LAYOUT.speech_pad_id + 1]}])
    with pytest.raises(ValueError, match="joint ids"):
        collate([{"input_ids": [-1, 5]}])
    with pytest.raises(ValueError, match="shape"):
        collate([{"input_ids": [5, 6], "labels": [5]}])
    with pytest.raises(ValueError, match="labels must be"):
        collate([{"input_ids": [5, 6], "labels": [5, 500]}])
    with pytest.raises(ValueError, match="1-D"):
        collate([{"input_ids": [[5, 6]]}])
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="padding_side"):
        SmolTolkDataCollator(LAYOUT, padding_side="middle")
    with pytest.raises(ValueError, match="pad_token_id"):
        SmolTolkDataCollator(LAYOUT, pad_token_id=-1)
