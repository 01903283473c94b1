"""Word segmentation from the last layer's dynamic weight `omega^(L)` (paper section 5.2, Table 3, appendix C.2).

Peak picking: peaks of `omega^(L)` along a speech input (`scipy.signal.find_peaks` with a minimum `prominence`, no
other constraint) predict word boundaries. The prominence is tuned over (0, 0.15] in steps of 0.01 to maximise the
R-value (as Kreuk et al., 2020), on the raw weights by default; with `rescale=True` each utterance's `omega^(L)` is
first min-max rescaled to [0, 1], so that the prominence is relative to the utterance's own range.

Scoring: matches within a tolerance of one token (the paper's choice, `tolerance=1`), counted as Kreuk et al.'s
evaluation does: a predicted boundary is a hit for precision if a reference boundary lies within the tolerance, a
reference boundary is a hit for recall if a prediction does; the counts are summed over the corpus before the ratios
are taken. The R-value (Räsänen et al., 2009) combines the hit rate (recall) with the over-segmentation
`OS = N_predicted / N_reference - 1` (`r_value="rasanen"`, the definition of the paper it cites). `r_value="kreuk"`
takes `OS = recall / precision - 1` instead (the UnsupSeg code of Kreuk et al.); both agree when every hit
prediction has its own reference boundary, and differ when several predictions hit one boundary.

Positions are deduplicated unit positions: `omega[k]` is the selector's weight at the input unit `k` (the state
that predicts unit `k + 1`). A word boundary is the unit whose start is nearest the word's end time (the unit
frames are rebuilt from the units dataset's `durations` and `frame_rate`); boundaries at the first unit or at or
after the utterance end are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from scipy.signal import find_peaks

from .batching import padded_batches

PROMINENCE_GRID = tuple(round(0.01 * i, 2) for i in range(1, 16))  # (0, 0.15] in steps of 0.01
R_VALUE_DEFINITIONS = ("rasanen", "kreuk")


@torch.no_grad()
def layer_weights(model: Any, processor: Any, units: Sequence[Sequence[int]], batch_size: int = 8) -> list[np.ndarray]:
    """Dynamic layer weights `omega`, `(n_units, num_hidden_layers)` per utterance, at the input unit positions.

    Each utterance is encoded as the processor encodes speech (`<|speech|> u_1 ... u_n`); batches are right-padded.
    """
    if not model.config.use_dynamic_pooling:
        raise ValueError("the model has no dynamic layer selector (use_dynamic_pooling=False): no omega to read")
    device = next(model.parameters()).device
    encoded = [processor(units=list(u))["input_ids"] for u in units]
    results: list[np.ndarray | None] = [None] * len(encoded)
    for rows, batch in padded_batches(encoded, model.config, batch_size, device=device, desc="layer weights"):
        omega = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).layer_weights
        omega = omega.float().cpu().numpy()
        for r, i in enumerate(rows):
            n_units = len(units[i])
            results[i] = omega[r, len(encoded[i]) - n_units : len(encoded[i])]
    return results


def word_boundaries(durations: Sequence[int], word_end_times: Sequence[float], frame_rate: float) -> np.ndarray:
    """Unit positions of word boundaries: for each word end, the unit whose start frame is nearest to it."""
    durations = np.asarray(durations, dtype=np.float64)
    if len(durations) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])  # start frame of each unit
    ends = np.asarray(word_end_times, dtype=np.float64) * frame_rate
    nearest = np.abs(starts[None, :] - ends[:, None]).argmin(axis=1) if len(ends) else np.zeros(0, np.int64)
    inside = ends < starts[-1] + durations[-1]  # a word ending at (or after) the last frame closes the utterance
    return np.unique(nearest[inside & (nearest > 0)])


def detect_peaks(weights: np.ndarray, prominence: float, rescale: bool = False) -> np.ndarray:
    """Peak positions of a 1-D weight sequence with at least `prominence` (after min-max rescaling to [0, 1] with
    `rescale`; a constant sequence has no peaks either way)."""
    weights = np.asarray(weights, dtype=np.float64)
    if rescale and len(weights):
        span = weights.max() - weights.min()
        weights = (weights - weights.min()) / span if span > 0 else np.zeros_like(weights)
    return find_peaks(weights, prominence=prominence)[0]


def boundary_scores(
    predicted: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    tolerance: int = 1,
    r_value: Literal["rasanen", "kreuk"] = "rasanen",
) -> dict[str, float]:
    """Precision, recall, F1 and R-value of predicted boundaries, counts summed over utterances (module docstring).

    Args:
        tolerance: a prediction and a reference boundary match when at most this many positions apart.
        r_value: over-segmentation in the R-value: `"rasanen"` (`N_predicted / N_reference - 1`, Räsänen et al.,
            2009) or `"kreuk"` (`recall / precision - 1`, the UnsupSeg code of Kreuk et al., 2020).
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted but {len(reference)} reference boundary lists")
    if r_value not in R_VALUE_DEFINITIONS:
        raise ValueError(f"r_value must be one of {R_VALUE_DEFINITIONS}, got {r_value!r}")
    precision_hits = recall_hits = num_predicted = num_reference = 0
    for pred, ref in zip(predicted, reference):
        pred, ref = np.asarray(pred, dtype=np.int64), np.asarray(ref, dtype=np.int64)
        num_predicted += len(pred)
        num_reference += len(ref)
        if len(pred) and len(ref):
            distance = np.abs(pred[:, None] - ref[None, :])
            precision_hits += int((distance.min(axis=1) <= tolerance).sum())
            recall_hits += int((distance.min(axis=0) <= tolerance).sum())
    if num_reference == 0:
        raise ValueError("no reference boundaries: recall and the R-value are undefined (check the word alignments)")
    precision = precision_hits / num_predicted if num_predicted else 0.0
    recall = recall_hits / num_reference
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # R-value: distance of (hit rate, over-segmentation) from the ideal point, penalising over-segmentation.
    if r_value == "rasanen":
        over_segmentation = num_predicted / num_reference - 1
    else:  # UnsupSeg: -1 without hits, where precision and recall are both 0
        over_segmentation = recall / precision - 1 if precision else -1.0
    r1 = np.hypot(1 - recall, over_segmentation)
    r2 = (-over_segmentation + recall - 1) / np.sqrt(2)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "r_value": float(1 - (abs(r1) + abs(r2)) / 2),
        "over_segmentation": float(over_segmentation),
    }


def tune_prominence(
    weights: Sequence[np.ndarray],
    reference: Sequence[Sequence[int]],
    grid: Sequence[float] = PROMINENCE_GRID,
    tolerance: int = 1,
    r_value: Literal["rasanen", "kreuk"] = "rasanen",
    rescale: bool = False,
) -> dict[str, Any]:
    """Scores peaks of each `weights[i]` (1-D, `omega^(L)`) for each prominence in `grid`; picks the best R-value.

    Returns:
        The best scores with their `prominence`, plus `grid`: the scores at every prominence.
    """
    results = []
    for prominence in grid:
        peaks = [detect_peaks(w, prominence, rescale) for w in weights]
        results.append({"prominence": float(prominence), **boundary_scores(peaks, reference, tolerance, r_value)})
    best = max(results, key=lambda r: r["r_value"])  # first best: the smallest prominence on ties
    return {**best, "grid": results}


def aligned_rows(dataset: Any) -> list:
    """The utterances of a units dataset that have units and word alignments (`word_end_times`)."""
    return [row for row in dataset if len(row["word_end_times"]) > 0 and len(row["units"]) > 0]


def aligned_layer_weights(
    model: Any, processor: Any, dataset: Any, batch_size: int = 8
) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """`(rows, omega, reference)` of the word-aligned utterances of `dataset` (`aligned_rows`): each one's dynamic
    layer weights `(n_units, L)` (`layer_weights`) and reference boundaries (`word_boundaries`)."""
    rows = aligned_rows(dataset)
    if not rows:
        raise ValueError("no utterance of the dataset has word alignments (word_end_times)")
    omega = layer_weights(model, processor, [row["units"] for row in rows], batch_size)
    reference = [word_boundaries(r["durations"], r["word_end_times"], r["frame_rate"]) for r in rows]
    return rows, omega, reference


def segmentation_scores(
    omega: Sequence[np.ndarray],
    reference: Sequence[Sequence[int]],
    grid: Sequence[float] = PROMINENCE_GRID,
    tolerance: int = 1,
    r_value: Literal["rasanen", "kreuk"] = "rasanen",
    rescale: bool = False,
) -> dict[str, Any]:
    """`evaluate_segmentation`'s result from layer weights already computed (`aligned_layer_weights`)."""
    result = tune_prominence([w[:, -1] for w in omega], reference, grid, tolerance, r_value, rescale)
    result.update(num_utterances=len(omega), tolerance=tolerance, r_value_definition=r_value, rescale=rescale)
    return result


def evaluate_segmentation(
    model: Any,
    processor: Any,
    dataset: Any,
    batch_size: int = 8,
    grid: Sequence[float] = PROMINENCE_GRID,
    tolerance: int = 1,
    r_value: Literal["rasanen", "kreuk"] = "rasanen",
    rescale: bool = False,
) -> dict[str, Any]:
    """Word segmentation scores on a units dataset with word alignments (`units`, `durations`, `word_end_times`,
    `frame_rate`); utterances without alignment are skipped. See the module docstring for the options.

    Returns:
        The best scores and their `prominence` (see `tune_prominence`), `num_utterances`, and the settings that
        produced them: `tolerance`, `r_value` (the over-segmentation definition), `rescale`.
    """
    _, omega, reference = aligned_layer_weights(model, processor, dataset, batch_size)
    return segmentation_scores(omega, reference, grid, tolerance, r_value, rescale)
