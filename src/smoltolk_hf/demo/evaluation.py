"""The demo's evaluation: a small spoken cloze set from the tiny corpus, four settings, and Figure 5.

Each word-aligned utterance is cut at its middle word: the first half is the context, its true second half the
correct continuation, and the second half of the next eligible utterance the incorrect one, in text (the
transcript's words) and in speech (units cut at the unit nearest the cut word's end time).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..evaluation.pairs import SETTINGS, ClozeItem
from ..evaluation.plots import plot_layer_weights
from ..evaluation.scoring import ScoringOptions, evaluate_items
from ..evaluation.segmentation import aligned_layer_weights, detect_peaks, segmentation_scores, word_boundaries
from .metrics import random_peaks_scores


def _halves(row: Mapping[str, Any]) -> dict[str, tuple[Any, Any]] | None:
    """(first half, second half) of an utterance in text and speech, or None when it cannot be cut."""
    words, ends, units = (
        list(row["words"]),
        list(row["word_end_times"]),
        np.asarray(row["units"], dtype=np.int64),
    )
    if len(words) < 4 or len(ends) != len(words) or len(units) < 4:
        return None
    middle = len(words) // 2
    cut = word_boundaries(row["durations"], [ends[middle - 1]], row["frame_rate"])
    if len(cut) == 0:
        return None
    return {
        "text": (" ".join(words[:middle]), " ".join(words[middle:])),
        "speech": (units[: cut[0]], units[cut[0] :]),
    }


def cloze_items_from_corpus(rows: Iterable[Mapping[str, Any]], max_items: int | None = None) -> list[ClozeItem]:
    """Spoken cloze items from units-dataset rows with word alignments (see the module docstring)."""
    eligible = [(row["id"], halves) for row in rows if (halves := _halves(row)) is not None]
    if len(eligible) < 2:
        raise ValueError(
            f"need at least 2 word-aligned utterances of 4+ words to build cloze pairs, got {len(eligible)}"
        )
    eligible = eligible[:max_items] if max_items else eligible
    items = []
    for index, (utterance_id, halves) in enumerate(eligible):
        other = eligible[(index + 1) % len(eligible)][1]
        items.append(
            ClozeItem(
                id=utterance_id,
                context={m: halves[m][0] for m in ("text", "speech")},
                correct={m: halves[m][1] for m in ("text", "speech")},
                incorrect={m: other[m][1] for m in ("text", "speech")},
            )
        )
    return items


def run_demo_evaluation(
    model: Any,
    processor: Any,
    corpus_dataset: Any,
    out_dir: str | os.PathLike,
    max_pairs: int = 32,
    options: ScoringOptions | None = None,
) -> dict[str, Any]:
    """Scores the corpus cloze set in S, T, T->S and S->T and prints the table; for a model with a dynamic selector
    also the word segmentation from `omega^(L)` (peaks on each utterance's weights rescaled to [0, 1], prominence
    tuned on the R-value) beside random peaks as many (`metrics.random_peaks_scores`), and writes the
    Figure 5 plot of the first aligned utterance.

    Args:
        corpus_dataset: a units dataset (`smoltolk tokenize`) with word alignments, ideally utterances held out
            from training.
        out_dir: where `selector_weights.png` (Figure 5) goes.

    Returns:
        `{"accuracy": {setting: acc}, "num_pairs", "segmentation": {...}, "random_peaks": {...}, "figure": path}`
        (the last three None without a selector).
    """
    rows = list(corpus_dataset)
    items = cloze_items_from_corpus(rows, max_pairs)
    results = evaluate_items(model, processor, items, list(SETTINGS), options)
    accuracy = {setting: result["accuracy"] for setting, result in results.items()}
    print(f"Spoken cloze from the corpus ({len(items)} pairs; correct = true second half, incorrect = another's):")
    print("| " + " | ".join(s.replace("->", "→") for s in accuracy) + " |")
    print("|" + "---|" * len(accuracy))
    print("| " + " | ".join(f"{100 * a:.1f}" for a in accuracy.values()) + " |")

    if not model.config.use_dynamic_pooling:
        print("No dynamic selector (e.g. baseline-135m): no word segmentation, no Figure 5")
        return {
            "accuracy": accuracy,
            "num_pairs": len(items),
            "segmentation": None,
            "random_peaks": None,
            "figure": None,
        }
    # Peaks on each utterance's omega^(L) rescaled to [0, 1]: a spread selector's weights stay near 1/L, and a fixed
    # raw prominence would find no peak however the weight moves with the words (docs/experiment.md).
    aligned, omega, reference = aligned_layer_weights(model, processor, rows)
    segmentation = segmentation_scores(omega, reference, rescale=True)
    random_peaks = random_peaks_scores(
        [w[:, -1] for w in omega], reference, segmentation["prominence"], rescale=True
    )
    for name, scores in (("omega^(L) peaks", segmentation), ("random, as many peaks", random_peaks)):
        print(
            f"Word segmentation, {name}: P {100 * scores['precision']:.1f}  R {100 * scores['recall']:.1f}"
            f"  F1 {100 * scores['f1']:.1f}  R-val {100 * scores['r_value']:.1f}"
        )
    print(
        f"  (prominence {segmentation['prominence']} of each utterance's range, tuned on the R-value; "
        f"{segmentation['num_utterances']} utterances, {random_peaks['num_peaks']} peaks)"
    )
    figure = plot_layer_weights(
        omega[0],
        os.path.join(os.fspath(out_dir), "selector_weights.png"),
        boundaries=reference[0],
        peaks=detect_peaks(omega[0][:, -1], segmentation["prominence"], rescale=True),
        title=f"Selector layer weights across utterance {aligned[0]['id']} (bars: word boundaries)",
    )
    print(f"Figure 5 (selector weights across an utterance): {figure}")
    return {
        "accuracy": accuracy,
        "num_pairs": len(items),
        "segmentation": {k: v for k, v in segmentation.items() if k != "grid"},
        "random_peaks": random_peaks,
        "figure": figure,
    }
