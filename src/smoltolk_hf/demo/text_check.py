"""A held-out text check: does speech training keep the backbone's text ability?

`heldout_stories.jsonl` (next to this file) holds 42 short everyday stories written for this package, each with a
right and a wrong ending, in the package's pair-manifest format (`evaluation.pairs`). None of it is in the demo's
training text (Debian fortunes), so it measures the text LM, not fit to the training text. It is scored as text
StoryCloze (setting `T`) with the package's scoring (`evaluation.scoring`): each ending's mean log-probability given
the story, right ending ranked above the wrong one = correct.

The wrong endings are plausible sentences about the story's people that break its logic (as in StoryCloze), not
nonsense, and they were not edited after seeing any model's scores. 42 pairs are a coarse instrument (one standard
error of an accuracy near 60% is 7.5 points), so two continuous measures come with the accuracy: the mean margin
(right minus wrong ending, mean log-probability per token) and the right endings' NLL per token given their
story, which rises when training damages the text LM.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..evaluation.pairs import build_pairs, load_benchmark
from ..evaluation.scoring import ScoringOptions, score_pairs

HELDOUT_STORIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "heldout_stories.jsonl")


def text_check(
    model: Any, processor: Any, path: str | os.PathLike = HELDOUT_STORIES, options: ScoringOptions | None = None
) -> dict[str, float]:
    """Scores `model` on the held-out stories (text StoryCloze, setting `T`).

    Args:
        model: a `SmolTolkForCausalLM` (a fresh `from_text_model` one scores exactly as its text backbone).
        processor: its `SmolTolkProcessor` (the speech tokenizer is not needed).
        path: a pair manifest with `context_text`, `correct_text` and `incorrect_text` per line.
        options: scoring options (default: the authors' protocol, mean log-probability of the ending).

    Returns:
        `{"accuracy", "num_pairs", "mean_margin", "ending_nll"}`: the accuracy in [0, 1], the mean over pairs of
        the right ending's score minus the wrong one's, and the right endings' mean NLL per token (nats).
    """
    options = options or ScoringOptions()
    pairs = build_pairs(load_benchmark(path), "T", options.protocol, options.seed)
    scores = score_pairs(model.eval(), processor, pairs, options)
    ties, average = options.rules()
    return {
        "accuracy": scores.accuracy(ties, average),
        "num_pairs": len(pairs),
        "mean_margin": float(np.mean(scores.correct - scores.incorrect)),
        "ending_nll": float(-np.mean(scores.correct)),
    }
