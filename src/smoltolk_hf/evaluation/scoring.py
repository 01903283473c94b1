"""Log-likelihood scoring of pairs, with the conventions of the public toolkits as options.

Every target is scored by the head of its own modality over its own vocabulary, as in training: text targets by
the text head over the text vocabulary, speech targets by the speech head over units and speech end (the speech
pad is never a target). Modality markers are never scored. Sequences are batched with right padding and an
attention mask, so a pair's score does not depend on the batch it was scored in.

Options (`ScoringOptions`); defaults follow the paper's authors (their `cross-modal_eval.py`):

- `reduction`: `"mean"` (mean log-probability per scored token, the default) or `"sum"` (total log-probability).
- `scope`: `"continuation"` (only the continuation's tokens, default) or `"sequence"` (every token that has a
  prediction, i.e. all but the first one and the markers). Whole-utterance pairs (no context, e.g. sBLIMP) score
  every token either way.
- `ties`: `"wrong"` (equal scores count as an error, default: the authors use a strict `>`) or `"half"` (0.5, as
  the ZeroSpeech sLM21 scripts and slamkit do).
- `average`: `"macro"` (mean over groups of the per-group accuracy, default: ZeroSpeech reports sBLIMP per type and
  the authors average the types) or `"micro"` (mean over pairs). Without groups both are the plain mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from .pairs import SETTINGS, ClozeItem, Pair, build_pairs, supports, tokenize_speech


@dataclass
class ScoringOptions:
    """How pairs are scored and aggregated (see the module docstring)."""

    reduction: Literal["mean", "sum"] = "mean"
    scope: Literal["continuation", "sequence"] = "continuation"
    ties: Literal["wrong", "half"] = "wrong"
    average: Literal["macro", "micro"] = "macro"
    batch_size: int = 8

    def __post_init__(self):
        for name, allowed in (
            ("reduction", ("mean", "sum")),
            ("scope", ("continuation", "sequence")),
            ("ties", ("wrong", "half")),
            ("average", ("macro", "micro")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairScores:
    """Scores of the two candidates of each pair (higher = more likely) and the pairs' groups."""

    ids: list[str]
    correct: np.ndarray
    incorrect: np.ndarray
    groups: list[str | None]

    def outcomes(self, ties: str = "wrong") -> np.ndarray:
        """Per pair: 1 if the correct candidate scores higher, 0 if lower, 0 or 0.5 for a tie."""
        tie_value = {"wrong": 0.0, "half": 0.5}[ties]
        return np.where(
            self.correct > self.incorrect,
            1.0,
            np.where(self.correct == self.incorrect, tie_value, 0.0),
        )

    def accuracy(self, ties: str = "wrong", average: str = "macro") -> float:
        """Accuracy in [0, 1]: over pairs (`"micro"`) or the mean of per-group accuracies (`"macro"`)."""
        outcomes = self.outcomes(ties)
        if len(outcomes) == 0:
            raise ValueError("no pairs to score")
        if average == "micro" or all(g is None for g in self.groups):
            return float(outcomes.mean())
        return float(np.mean(list(self.group_accuracies(ties).values())))

    def group_accuracies(self, ties: str = "wrong") -> dict[str, float]:
        outcomes = self.outcomes(ties)
        groups = np.asarray([str(g) for g in self.groups])
        return {g: float(outcomes[groups == g].mean()) for g in sorted(set(groups))}


def encode_candidate(
    processor: Any, context: list, continuation: list, scope: str = "continuation"
) -> tuple[list[int], list[int]]:
    """Joint ids of `context + continuation` and the indices of the targets to score.

    Target `j` is `ids[j]` predicted from `ids[:j]` (so `j >= 1`). Markers are never scored; with
    `scope="continuation"` only targets inside the continuation are.
    """
    ids = processor(segments=context + continuation)["input_ids"]
    # Without a context every token that has a prediction is scored (the first one never has).
    start = len(processor(segments=context)["input_ids"]) if (context and scope == "continuation") else 1
    markers = (
        processor.text_marker_id,
        processor.speech_marker_id,
        processor.speech_pad_id,
    )
    targets = [j for j in range(max(start, 1), len(ids)) if ids[j] not in markers]
    if not targets:
        raise ValueError(f"nothing to score: the continuation {continuation!r} encodes to no scorable token")
    return ids, targets


@torch.no_grad()
def token_log_probs(
    model: Any, sequences: list[list[int]], batch_size: int = 8, pad_token_id: int = 0
) -> list[torch.Tensor]:
    """`log p(ids[j] | ids[:j])` for `j = 1 .. len - 1` of each sequence (float32, on CPU).

    Text targets are scored by the text head, speech targets (units, speech end) by the speech head; other targets
    (markers, speech pad) get 0. Sequences are sorted by length and right-padded in batches of `batch_size`.
    """
    cfg = model.config
    device = next(model.parameters()).device
    pad_column = cfg.speech_pad_id - cfg.speech_token_offset
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    results: list[torch.Tensor | None] = [None] * len(sequences)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        length = len(sequences[rows[0]])
        input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for r, i in enumerate(rows):
            input_ids[r, : len(sequences[i])] = torch.as_tensor(sequences[i])
            attention_mask[r, : len(sequences[i])] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        out = model.model(input_ids=input_ids, attention_mask=attention_mask)
        targets = input_ids[:, 1:]
        valid = attention_mask[:, 1:].bool()
        is_text = valid & (targets < cfg.vocab_size)
        is_speech = valid & (targets >= cfg.speech_token_offset) & (targets < cfg.speech_pad_id)
        log_probs = torch.zeros(targets.shape, dtype=torch.float32, device=device)
        if is_text.any():
            logits = model.lm_head(out.last_hidden_state[:, :-1][is_text]).float()
            log_probs[is_text] = logits.log_softmax(-1).gather(-1, targets[is_text][:, None])[:, 0]
        if is_speech.any():
            logits = model.speech_logits(out.speech_hidden_state[:, :-1][is_speech]).float()
            logits[:, pad_column] = float("-inf")
            speech_targets = targets[is_speech] - cfg.speech_token_offset
            log_probs[is_speech] = logits.log_softmax(-1).gather(-1, speech_targets[:, None])[:, 0]
        log_probs = log_probs.cpu()
        for r, i in enumerate(rows):
            results[i] = log_probs[r, : len(sequences[i]) - 1]
    return results


def reduce_log_probs(log_probs: torch.Tensor, targets: list[int], reduction: str = "mean") -> float:
    """Mean or sum of the log-probabilities of `targets` (indices into the sequence, so `log_probs[j - 1]`)."""
    selected = log_probs[torch.as_tensor(targets) - 1].double()
    return float(selected.mean() if reduction == "mean" else selected.sum())


def score_pairs(model: Any, processor: Any, pairs: list[Pair], options: ScoringOptions | None = None) -> PairScores:
    """Scores both candidates of every pair (speech as unit ids: see `pairs.tokenize_speech`)."""
    options = options or ScoringOptions()
    sequences, targets = [], []
    for pair in pairs:
        for continuation in (pair.correct, pair.incorrect):
            ids, scored = encode_candidate(processor, pair.context, continuation, options.scope)
            sequences.append(ids)
            targets.append(scored)
    log_probs = token_log_probs(model, sequences, options.batch_size, processor.pad_token_id)
    scores = np.array([reduce_log_probs(lp, t, options.reduction) for lp, t in zip(log_probs, targets)])
    return PairScores(
        ids=[p.id for p in pairs],
        correct=scores[0::2],
        incorrect=scores[1::2],
        groups=[p.group for p in pairs],
    )


def evaluate_items(
    model: Any,
    processor: Any,
    items: list[ClozeItem],
    settings: Sequence[str] | None = None,
    options: ScoringOptions | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy of one benchmark in each of `settings` (default: every setting some item supports); audio is
    tokenized once for all settings. An item that lacks what a chosen setting needs raises, naming it.

    Returns:
        `{setting: {"accuracy", "num_pairs", "group_accuracies" (if grouped)}}`.
    """
    options = options or ScoringOptions()
    if settings is None:
        settings = [s for s in SETTINGS if any(supports(item, s) for item in items)]
    items = tokenize_speech(items, processor.speech_tokenizer)
    results = {}
    for setting in settings:
        pairs = build_pairs(items, setting)
        scores = score_pairs(model, processor, pairs, options)
        result: dict[str, Any] = {
            "accuracy": scores.accuracy(options.ties, options.average),
            "num_pairs": len(pairs),
        }
        if any(g is not None for g in scores.groups):
            result["group_accuracies"] = scores.group_accuracies(options.ties)
        results[setting] = result
    return results
