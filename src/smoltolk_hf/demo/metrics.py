"""What shows that SmolTolk learned speech, not only trained: numbers to read beside the held-out speech NLL.

- `unigram_cross_entropy`: the held-out NLL of unit frequencies alone. A speech NLL above it means the model has
  learned less than how often each unit occurs.
- `selector_state`: where the dynamic selector puts its weight on held-out speech. A mean max weight near 1 on the
  last layer is the "last layer only" ablation reached by collapse; the paper's selector spreads its weight and
  peaks at word boundaries (Figure 5).
- `random_peaks_scores`: word segmentation by random boundaries, as many as the selector's peaks: what the
  selector's segmentation scores must beat to mean anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..evaluation.segmentation import boundary_scores, detect_peaks


def unigram_cross_entropy(
    train_units: Iterable[Sequence[int]], heldout_units: Iterable[Sequence[int]], num_units: int
) -> float:
    """Cross-entropy (nats per token) on `heldout_units` of an add-one smoothed unigram model of `train_units`.

    The symbols are the `num_units` units and the speech end token, one per utterance: the targets that
    `evaluation.nll.speech_nll(mode="packed")` (the training loss on held-out data) scores, so the two compare.
    """
    counts = np.ones(num_units + 1)  # add-one; index num_units is the speech end token
    for units in train_units:
        np.add.at(counts, np.asarray(units, dtype=np.int64), 1)
        counts[num_units] += 1
    log_p = np.log(counts / counts.sum())
    total, count = 0.0, 0
    for units in heldout_units:
        total -= log_p[np.asarray(units, dtype=np.int64)].sum() + log_p[num_units]
        count += len(units) + 1
    if count == 0:
        raise ValueError("no held-out utterances to evaluate the unigram model on")
    return float(total / count)


def selector_state(omega: Sequence[np.ndarray]) -> dict[str, float]:
    """Summary of the selector's weights over every position of `omega` (per utterance `(n_units, L)`, as
    `evaluation.segmentation.layer_weights` returns them).

    Returns:
        `{"mean_max_weight", "entropy", "max_entropy", "mean_layer", "peak_layer", "last_layer_share",
        "num_layers"}`: the mean over positions of the largest layer weight and of the entropy of `omega` (nats;
        `max_entropy` = ln L for uniform weights), the weight-averaged layer (1-based), the layer with the largest mean
        weight (1-based), and the share of positions whose largest weight is on the last layer.
    """
    omega = np.concatenate(list(omega)).astype(np.float64)
    num_layers = omega.shape[1]
    entropy = -(omega * np.log(np.clip(omega, 1e-30, None))).sum(axis=1)
    return {
        "mean_max_weight": float(omega.max(axis=1).mean()),
        "entropy": float(entropy.mean()),
        "max_entropy": float(np.log(num_layers)),
        "mean_layer": float((omega @ np.arange(1, num_layers + 1)).mean()),
        "peak_layer": int(omega.mean(axis=0).argmax()) + 1,
        "last_layer_share": float((omega.argmax(axis=1) == num_layers - 1).mean()),
        "num_layers": num_layers,
    }


def random_peaks_scores(
    weights: Sequence[np.ndarray],
    reference: Sequence[Sequence[int]],
    prominence: float,
    draws: int = 20,
    seed: int = 0,
    tolerance: int = 1,
    rescale: bool = False,
) -> dict[str, float]:
    """Segmentation scores of random boundaries: in each utterance as many as `omega^(L)` (`weights[i]`) has peaks
    at `prominence` (`evaluation.segmentation.detect_peaks`, with its `rescale`), drawn uniformly without repeats from the positions a boundary can take (1 .. n - 1), scored
    with `evaluation.segmentation.boundary_scores` and averaged over `draws` draws. The baseline a selector's
    segmentation must beat: it has the same number of boundaries and knows nothing of the words."""
    rng = np.random.default_rng(seed)
    counts = [len(detect_peaks(w, prominence, rescale)) for w in weights]
    totals: dict[str, float] = {}
    for _ in range(draws):
        predicted = [
            np.sort(rng.choice(np.arange(1, len(w)), size=min(k, len(w) - 1), replace=False))
            for w, k in zip(weights, counts)
        ]
        for key, value in boundary_scores(predicted, reference, tolerance).items():
            totals[key] = totals.get(key, 0.0) + value / draws
    return {**totals, "num_peaks": int(sum(counts)), "draws": draws}


def format_selector_state(state: dict[str, float]) -> str:
    """One line for `selector_state`'s result."""
    return (
        f"mean max weight {state['mean_max_weight']:.3f}, entropy {state['entropy']:.3f} nats "
        f"(uniform {state['max_entropy']:.3f}), weight-averaged layer {state['mean_layer']:.1f} of "
        f"{state['num_layers']}, peak layer {state['peak_layer']}, last layer the largest at "
        f"{100 * state['last_layer_share']:.0f}% of positions"
    )
