"""Representation analyses: subspace overlap, truncation, last-token states, GRIDE in the dadapy environment."""

import os

import numpy as np
import pytest
from helpers import tiny_eval_model

from smoltolk_hf.evaluation.representations import (
    default_dadapy_python,
    explained_variance_fraction,
    intrinsic_dimension,
    last_token_representations,
    subspace_overlap,
    truncate_activations,
)


def test_overlap_with_itself_is_one_and_orthogonal_is_zero():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 32))
    (layer,) = subspace_overlap(x[None], x[None], n_components=50)
    assert layer == pytest.approx({"speech_on_text": 1.0, "text_on_speech": 1.0, "mean": 1.0})
    a = np.concatenate([rng.standard_normal((100, 4)), np.zeros((100, 4))], axis=1)
    b = np.concatenate([np.zeros((100, 4)), rng.standard_normal((100, 4))], axis=1)
    assert explained_variance_fraction(a, b, n_components=4) == pytest.approx(0.0, abs=1e-12)
    assert explained_variance_fraction(a, a, n_components=2) < 1.0


def test_truncation_clips_at_the_percentile():
    x = np.arange(-50, 50, dtype=np.float64).reshape(10, 10)
    clipped = truncate_activations(x, 95)
    threshold = np.percentile(np.abs(x), 95)
    assert clipped.max() == threshold and clipped.min() == -threshold
    np.testing.assert_array_equal(clipped[np.abs(x) <= threshold], x[np.abs(x) <= threshold])


def test_last_token_representations_batched_equals_single():
    model, processor = tiny_eval_model()
    sequences = [
        processor(units=[1, 2, 3])["input_ids"],
        processor(text="the cat sat")["input_ids"],
    ]
    batched = last_token_representations(model, sequences, batch_size=2, pad_token_id=processor.pad_token_id)
    assert batched.shape == (3, 2, 32)
    for i, ids in enumerate(sequences):
        single = last_token_representations(model, [ids], batch_size=1)
        np.testing.assert_allclose(batched[:, i], single[:, 0], atol=1e-5)


@pytest.mark.dadapy
@pytest.mark.skipif(
    not os.path.isfile(default_dadapy_python()),
    reason="dadapy environment missing (scripts/setup_dadapy.sh)",
)
def test_gride_recovers_the_dimension_of_a_linear_manifold():
    rng = np.random.default_rng(0)
    layers = np.stack([rng.standard_normal((600, d)) @ rng.standard_normal((d, 40)) for d in (3, 8)])
    result = intrinsic_dimension(layers, batch_size=300, percentile=None, range_max=32, scale=8)
    assert len(result) == 2 and len(result[0]["batches"]) == 2 and result[0]["scales"] == [2, 4, 8, 16, 32]
    assert result[0]["id"] == pytest.approx(3, abs=0.6) and result[1]["id"] == pytest.approx(8, abs=1.6)
