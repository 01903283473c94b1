"""Word segmentation metrics, boundary mapping, omega extraction and the Figure 5 plot."""

import numpy as np
import pytest
from helpers import tiny_eval_model

from smoltolk_hf.evaluation import (
    boundary_scores,
    layer_weights,
    tune_prominence,
    word_boundaries,
)
from smoltolk_hf.evaluation.plots import plot_layer_weights, plot_per_layer
from smoltolk_hf.evaluation.segmentation import PROMINENCE_GRID, detect_peaks


def test_scores_match_hand_computation():
    # Reference 3 and 7; predictions 2 (hit, |2-3| = 1), 5 (miss), 8 (hit): P = 2/3, R = 1, F1 = 0.8.
    # R-value: OS = R/P - 1 = 0.5, r1 = sqrt(0^2 + 0.5^2) = 0.5, r2 = (-0.5 + 1 - 1)/sqrt(2), R = 1 - (r1 + |r2|)/2.
    scores = boundary_scores([[2, 5, 8]], [[3, 7]], tolerance=1)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(1.0)
    assert scores["f1"] == pytest.approx(0.8)
    assert scores["r_value"] == pytest.approx(1 - (0.5 + 0.5 / np.sqrt(2)) / 2)
    # Counts are summed over utterances; tolerance 0 only accepts exact positions.
    scores = boundary_scores([[3], [1, 9]], [[3, 6], [9]], tolerance=0)
    assert (scores["precision"], scores["recall"]) == pytest.approx((2 / 3, 2 / 3))
    perfect = boundary_scores([[4, 9]], [[4, 9]])
    assert perfect["r_value"] == pytest.approx(1.0) and perfect["f1"] == pytest.approx(1.0)
    # No prediction: OS = -1 in both definitions, r1 = sqrt(2), r2 = 0.
    for definition in ("rasanen", "kreuk"):
        assert boundary_scores([[]], [[4]], r_value=definition) == pytest.approx(
            {"precision": 0.0, "recall": 0.0, "f1": 0.0, "r_value": 1 - np.sqrt(2) / 2, "over_segmentation": -1.0}
        )


def test_r_value_definitions_differ_when_several_predictions_hit_one_boundary():
    # Reference 5, 10, 20; predictions 4 and 6 both hit 5, 10 and 11 both hit 10, 20 is missed: P = 4/4, R = 2/3.
    # Räsänen: OS = N_pred / N_ref - 1 = 1/3, r1 = hypot(1/3, 1/3), r2 = (-1/3 + 2/3 - 1) / sqrt(2) = -r1
    #   -> R-value = 1 - r1 = 0.529. UnsupSeg (Kreuk): OS = R / P - 1 = -1/3, r1 the same, r2 = 0 -> 1 - r1 / 2 = 0.764.
    predicted, reference = [[4, 6, 10, 11]], [[5, 10, 20]]
    rasanen = boundary_scores(predicted, reference)  # the default
    kreuk = boundary_scores(predicted, reference, r_value="kreuk")
    r1 = np.hypot(1 / 3, 1 / 3)
    assert (rasanen["precision"], rasanen["recall"]) == pytest.approx((1.0, 2 / 3))
    assert rasanen["over_segmentation"] == pytest.approx(1 / 3) and kreuk["over_segmentation"] == pytest.approx(-1 / 3)
    assert rasanen["r_value"] == pytest.approx(1 - r1) and round(rasanen["r_value"], 3) == 0.529
    assert kreuk["r_value"] == pytest.approx(1 - r1 / 2) and round(kreuk["r_value"], 3) == 0.764
    with pytest.raises(ValueError, match="r_value must be one of"):
        boundary_scores(predicted, reference, r_value="unsupseg")
    with pytest.raises(ValueError, match="no reference boundaries"):
        boundary_scores([[3]], [[]])


def test_word_boundaries_on_deduplicated_units():
    # Units last 2, 3, 1, 4 frames at 10 Hz: they start at frames 0, 2, 5, 6 (0, 0.2, 0.5, 0.6 s).
    durations, frame_rate = [2, 3, 1, 4], 10.0
    assert word_boundaries(durations, [0.21, 0.52, 1.0], frame_rate).tolist() == [
        1,
        2,
    ]  # 1.0 s closes the utterance
    assert word_boundaries(durations, [0.0, 0.58], frame_rate).tolist() == [3]  # a boundary at unit 0 is dropped


def test_prominence_grid_and_tuning():
    assert PROMINENCE_GRID[0] == 0.01 and PROMINENCE_GRID[-1] == 0.15 and len(PROMINENCE_GRID) == 15
    weights = np.full(20, 0.1)
    weights[[5, 12]] = 0.5  # two strong peaks at the true boundaries
    weights[[2, 16]] = 0.13  # two weak spurious ones (prominence 0.03)
    best = tune_prominence([weights], [[5, 12]])
    assert best["r_value"] == pytest.approx(1.0) and best["prominence"] == pytest.approx(0.04)
    assert len(best["grid"]) == 15 and best["grid"][0]["precision"] == pytest.approx(0.5)


def test_per_utterance_rescaling():
    # Two utterances with the same shape at different scales: true peaks at 5 and 12 (height 1 above a flat base),
    # spurious ones at 2 and 16 (height 0.11). The second utterance is 1/33 of the first.
    shape = np.zeros(20)
    shape[[5, 12]], shape[[2, 16]] = 1.0, 0.11
    weights, reference = [0.2 + 0.5 * shape, 0.2 + 0.015 * shape], [[5, 12], [5, 12]]
    # Rescaled to [0, 1], both have spurious peaks of prominence 0.11 and true ones of 1: any p in [0.12, 0.15] is exact.
    rescaled = tune_prominence(weights, reference, rescale=True)
    assert rescaled["r_value"] == pytest.approx(1.0) and rescaled["prominence"] == pytest.approx(0.12)
    # Raw, the second utterance's true peaks (prominence 0.015) vanish at p = 0.02, before the first's spurious ones
    # (0.055) do: the best is p = 0.06, the first utterance's true peaks only (P = 1, R = 1/2, R-value 0.646).
    raw = tune_prominence(weights, reference)
    assert raw["prominence"] == pytest.approx(0.06)
    assert raw["r_value"] == pytest.approx(boundary_scores([[5, 12], []], reference)["r_value"])
    assert raw["r_value"] == pytest.approx(1 - np.hypot(0.5, 0.5) / 2)
    assert detect_peaks(np.full(6, 0.3), 0.01, rescale=True).size == 0  # constant: no peaks, no division by zero


def test_layer_weights_batched_equals_single_and_plot(tmp_path):
    model, processor = tiny_eval_model()
    units = [[1, 4, 2, 7, 3], [5, 6, 1], [2, 2, 9, 4, 1, 8, 0]]
    batched = layer_weights(model, processor, units, batch_size=3)
    for u, omega in zip(units, batched):
        (single,) = layer_weights(model, processor, [u], batch_size=1)
        assert omega.shape == (len(u), model.config.num_hidden_layers)
        np.testing.assert_allclose(omega, single, atol=1e-6)
        np.testing.assert_allclose(omega.sum(-1), 1.0, atol=1e-5)
    path = plot_layer_weights(
        np.random.default_rng(0).dirichlet(np.ones(6), size=40),
        tmp_path / "fig5.png",
        boundaries=[8, 17, 30],
        words=["one", "two", "three"],
        peaks=[7, 18],
    )
    curves = plot_per_layer(
        {"a": [1, 2, 3], "b": [2, 2, 1]},
        tmp_path / "fig3.png",
        "ID",
        "Intrinsic dimension",
        errors={"a": [0.1, 0.2, 0.1]},
    )
    for png in (path, curves):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no dynamic layer selector"):
        layer_weights(tiny_eval_model(use_dynamic_pooling=False)[0], processor, units)
