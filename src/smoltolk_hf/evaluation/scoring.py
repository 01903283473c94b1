"""Log-likelihood scoring of pairs under a named protocol, with the conventions of the public toolkits as options.

Every target is scored by the head of its own modality over its own vocabulary, with the model's own target rule
(`modeling_smoltolk.scored_targets`: text ids by the text head, units and speech end by the speech head; markers
and speech pad never). Sequences are batched by `batching.padded_batches`, so a pair's score does not depend on
the batch it was scored in.

Protocols (`ScoringOptions.protocol`):

- `"authors"` (default): the paper authors' code (`cross-modal_eval.py`, `nll_eval.py`, the ZeroSpeech toolkit).
  A sequence starts with its context (no BOS, no leading marker); one switch marker goes between context and
  continuation when the modality changes; S->T puts the last `prefix_tokens` (10) text tokens of another
  continuation (its end token included, drawn per candidate with `seed`: `pairs.draw_prefix_sources`) before the
  speech context, with no marker between them; the S->T text continuation is the token array of T (leading
  space). Whole utterances (sBLIMP, whole-story files) start with the end token of their modality as BOS (speech
  end, as `nll_eval.py`; for text the tokenizer's EOS, our choice: the authors' code has no text BLiMP) and
  every token after it is scored. Ties and averaging follow each benchmark (`benchmarks.BENCHMARKS`): StoryCloze
  counts a tie as wrong and averages over pairs; sBLIMP counts a tie 0.5, averages the voices of a pair, then
  the pairs of a type, then the types.
- `"package"`: this package's earlier conventions: the processor's encoding (tokenizer BOS if it has one, a
  `<|speech|>` before speech at the start), no S->T prefix, no leading space in S->T; ties wrong, macro average.

Options: `reduction` (`"mean"` log-probability per scored token, or `"sum"`), `scope` (`"continuation"`: only the
continuation's tokens, or `"sequence"`: every token with a prediction), `ties` and `average` (None: the
protocol's rule for the benchmark).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..data.samples import IGNORE_INDEX
from ..modeling_smoltolk import scored_targets
from .batching import padded_batches
from .benchmarks import BENCHMARKS, Benchmark
from .pairs import SETTINGS, ClozeItem, Pair, build_pairs, supports, tokenize_speech

PROTOCOLS = ("authors", "package")


@dataclass
class ScoringOptions:
    """How pairs are encoded, scored and aggregated (see the module docstring)."""

    reduction: Literal["mean", "sum"] = "mean"
    scope: Literal["continuation", "sequence"] = "continuation"
    ties: Literal["wrong", "half"] | None = None
    average: Literal["macro", "micro"] | None = None
    batch_size: int = 8
    protocol: Literal["authors", "package"] = "authors"
    prefix_tokens: int = 10
    seed: int = 42

    def __post_init__(self):
        for name, allowed in (
            ("reduction", ("mean", "sum")),
            ("scope", ("continuation", "sequence")),
            ("ties", ("wrong", "half", None)),
            ("average", ("macro", "micro", None)),
            ("protocol", PROTOCOLS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.prefix_tokens < 0:
            raise ValueError(f"prefix_tokens must be >= 0, got {self.prefix_tokens}")

    def rules(self, benchmark: Benchmark | None = None) -> tuple[str, str]:
        """`(ties, average)`: the options' own, else the protocol's rule for `benchmark` (None: StoryCloze-like)."""
        if self.protocol == "package":
            default = ("wrong", "macro")
        else:
            default = (benchmark.ties, benchmark.average) if benchmark else ("wrong", "micro")
        return self.ties or default[0], self.average or default[1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairScores:
    """Scores of the two candidates of each pair (higher = more likely), the pairs' groups and base ids."""

    ids: list[str]
    correct: np.ndarray
    incorrect: np.ndarray
    groups: list[str | None]
    base_ids: list[str | None] | None = None

    def outcomes(self, ties: str = "wrong") -> np.ndarray:
        """Per pair: 1 if the correct candidate scores higher, 0 if lower, 0 or 0.5 for a tie."""
        tie_value = {"wrong": 0.0, "half": 0.5}[ties]
        return np.where(
            self.correct > self.incorrect,
            1.0,
            np.where(self.correct == self.incorrect, tie_value, 0.0),
        )

    def _base_outcomes(self, ties: str) -> tuple[np.ndarray, list[str | None]]:
        """One outcome per base id (the mean over its renditions, e.g. sBLIMP voices) and its group."""
        outcomes = self.outcomes(ties)
        keys = self.base_ids or [None] * len(outcomes)
        members: dict[Any, list[int]] = defaultdict(list)
        for index, key in enumerate(keys):
            members[index if key is None else key].append(index)
        return (
            np.array([outcomes[m].mean() for m in members.values()]),
            [self.groups[m[0]] for m in members.values()],
        )

    def accuracy(self, ties: str = "wrong", average: str = "macro") -> float:
        """Accuracy in [0, 1]: renditions of a base id averaged first, then the mean over base ids (`"micro"`) or
        the mean of per-group accuracies (`"macro"`)."""
        if len(self.ids) == 0:
            raise ValueError("no pairs to score")
        outcomes, groups = self._base_outcomes(ties)
        if average == "micro" or all(g is None for g in groups):
            return float(outcomes.mean())
        return float(np.mean(list(self.group_accuracies(ties).values())))

    def group_accuracies(self, ties: str = "wrong") -> dict[str, float]:
        outcomes, groups = self._base_outcomes(ties)
        groups = np.asarray([str(g) for g in groups])
        return {g: float(outcomes[groups == g].mean()) for g in sorted(set(groups))}


def encode_candidate(
    processor: Any, context: list, continuation: list, scope: str = "continuation"
) -> tuple[list[int], list[int]]:
    """Package protocol: the processor's joint ids of `context + continuation` and the indices of the targets to
    score.

    Target `j` is `ids[j]` predicted from `ids[:j]` (so `j >= 1`). Markers are never scored; with
    `scope="continuation"` only targets inside the continuation are.
    """
    ids = processor(segments=context + continuation)["input_ids"]
    # Without a context every token that has a prediction is scored (the first one never has).
    start = len(processor(segments=context)["input_ids"]) if (context and scope == "continuation") else 1
    return ids, _targets(processor, ids, start, continuation)


def _targets(layout: Any, ids: list[int], start: int, continuation: Any) -> list[int]:
    """Indices `j >= start` whose token the model scores, by its own rule (`scored_targets`: no markers, no pad)."""
    start = max(start, 1)
    labels = torch.tensor([[IGNORE_INDEX] * start + list(ids[start:])])
    is_text, is_speech = scored_targets(labels, layout)
    targets = ((is_text | is_speech)[0].nonzero()[:, 0] + 1).tolist()
    if not targets:
        raise ValueError(f"nothing to score: the continuation {continuation!r} encodes to no scorable token")
    return targets


def _joint_ids(processor: Any, modality: str, content: Any) -> list[int]:
    """Joint ids of one segment without markers: text (a string or pre-tokenised ids) or speech units."""
    if modality == "text" and isinstance(content, str):
        return processor.tokenizer(content, add_special_tokens=False)["input_ids"]
    ids = np.asarray(content, dtype=np.int64).reshape(-1)
    limit = processor.vocab_size if modality == "text" else processor.num_speech_units
    if len(ids) == 0 or ids.min() < 0 or ids.max() >= limit:
        raise ValueError(f"{modality} ids must be a non-empty sequence in [0, {limit}), got {ids[:8].tolist()}...")
    return (ids if modality == "text" else ids + processor.speech_token_offset).tolist()


def _end_token(processor: Any, modality: str) -> int:
    if modality == "speech":
        return processor.speech_eos_id
    if processor.tokenizer.eos_token_id is None:
        raise ValueError("the authors' protocol starts a whole text utterance with EOS; the tokenizer has none")
    return processor.tokenizer.eos_token_id


def encode_authors(
    processor: Any,
    context: list,
    continuation: list,
    scope: str = "continuation",
    prefix: tuple[Any, int | None] | None = None,
    prefix_tokens: int = 10,
) -> tuple[list[int], list[int]]:
    """Authors' protocol: joint ids of `[prefix] context [switch] continuation` (or `end-token continuation` for a
    whole utterance) and the indices of the targets to score (see the module docstring)."""
    ((modality, content),) = continuation
    if not context:
        ids = [_end_token(processor, modality)]
    else:
        ids = []
        if prefix is not None:
            text, eos = prefix
            pool = _joint_ids(processor, "text", text) + [_end_token(processor, "text") if eos is None else eos]
            ids += pool[-prefix_tokens:] if prefix_tokens else []
        for context_modality, context_content in context:
            ids += _joint_ids(processor, context_modality, context_content)
        if context[-1][0] != modality:
            ids.append(processor.speech_marker_id if modality == "speech" else processor.text_marker_id)
    start = len(ids) if scope == "continuation" else 1
    ids += _joint_ids(processor, modality, content)
    return ids, _targets(processor, ids, start, continuation)


def encode_pair(processor: Any, pair: Pair, options: ScoringOptions) -> list[tuple[list[int], list[int]]]:
    """`(ids, targets)` of the correct and the incorrect candidate of `pair` under `options.protocol`."""
    if options.protocol == "package":
        return [encode_candidate(processor, pair.context, c, options.scope) for c in (pair.correct, pair.incorrect)]
    prefixes = pair.prefixes or (None, None)
    return [
        encode_authors(processor, pair.context, continuation, options.scope, prefix, options.prefix_tokens)
        for continuation, prefix in zip((pair.correct, pair.incorrect), prefixes)
    ]


@torch.no_grad()
def token_log_probs(
    model: Any,
    sequences: list[list[int]],
    batch_size: int = 8,
    pad_token_id: int | None = None,
    labels: list[list[int]] | None = None,
    desc: str = "scoring",
) -> list[torch.Tensor]:
    """`log p(ids[j] | ids[:j])` for `j = 1 .. len - 1` of each sequence (float32, on CPU).

    Targets are chosen and routed by the model's own rule (`scored_targets`): text targets by the text head over
    the text vocabulary, speech targets (units, speech end) by the speech head over units and speech end (as
    generation: the pad row is never predicted). Other targets (markers, speech pad, positions whose `labels` are
    -100) get 0. `pad_token_id` pads the batches (default: the speech pad).
    """
    cfg = model.config
    device = next(model.parameters()).device
    speech_columns = cfg.speech_pad_id - cfg.speech_token_offset  # units and speech end
    results: list[torch.Tensor | None] = [None] * len(sequences)
    batches = padded_batches(sequences, cfg, batch_size, labels, device, desc, pad_token_id)
    for rows, batch in batches:
        out = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        is_text, is_speech = scored_targets(batch["labels"], cfg)
        targets = batch["labels"][:, 1:]
        log_probs = torch.zeros(targets.shape, dtype=torch.float32, device=device)
        if is_text.any():
            logits = model.lm_head(out.last_hidden_state[:, :-1][is_text]).float()
            log_probs[is_text] = logits.log_softmax(-1).gather(-1, targets[is_text][:, None])[:, 0]
        if is_speech.any():
            logits = model.speech_logits(out.speech_hidden_state[:, :-1][is_speech]).float()[:, :speech_columns]
            speech_targets = targets[is_speech] - cfg.speech_token_offset
            log_probs[is_speech] = logits.log_softmax(-1).gather(-1, speech_targets[:, None])[:, 0]
        log_probs = log_probs.cpu()
        lengths = batch["attention_mask"].sum(-1).tolist()
        for r, i in enumerate(rows):
            results[i] = log_probs[r, : lengths[r] - 1]
    return results


def score_pairs(model: Any, processor: Any, pairs: list[Pair], options: ScoringOptions | None = None) -> PairScores:
    """Scores both candidates of every pair (speech as unit ids: see `pairs.tokenize_speech`)."""
    options = options or ScoringOptions()
    sequences, labels, counts = [], [], []
    for pair in pairs:
        for ids, targets in encode_pair(processor, pair, options):
            sequences.append(ids)
            label = [IGNORE_INDEX] * len(ids)
            for j in targets:
                label[j] = ids[j]
            labels.append(label)
            counts.append(len(targets))
    log_probs = token_log_probs(model, sequences, options.batch_size, labels=labels, desc="scoring pairs")
    totals = np.array([float(lp.double().sum()) for lp in log_probs])
    scores = totals / np.array(counts) if options.reduction == "mean" else totals
    return PairScores(
        ids=[p.id for p in pairs],
        correct=scores[0::2],
        incorrect=scores[1::2],
        groups=[p.group for p in pairs],
        base_ids=[p.base_id for p in pairs],
    )


def scoring_scope(items: list[ClozeItem], options: ScoringOptions) -> str:
    """What a setting's score covers: `"continuation"`, `"whole utterance"` (no separate context) or
    `"context and continuation"` (`scope="sequence"`)."""
    if not any(item.context for item in items):
        return "whole utterance"
    return "continuation" if options.scope == "continuation" else "context and continuation"


def evaluate_items(
    model: Any,
    processor: Any,
    items: list[ClozeItem],
    settings: Sequence[str] | None = None,
    options: ScoringOptions | None = None,
    benchmark: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy of one benchmark in each of `settings` (default: every setting some item supports); audio is
    tokenized once for all settings. An item that lacks what a chosen setting needs raises, naming it.

    Args:
        benchmark: its key in `benchmarks.BENCHMARKS` (ties and averaging of the authors' protocol); None: the
            StoryCloze rules.

    Returns:
        `{setting: {"accuracy", "num_pairs", "scope", "ties", "average", "group_accuracies" (if grouped)}}`.
    """
    options = options or ScoringOptions()
    ties, average = options.rules(BENCHMARKS[benchmark] if benchmark else None)
    if settings is None:
        settings = [s for s in SETTINGS if any(supports(item, s) for item in items)]
    items = tokenize_speech(items, processor.speech_tokenizer)
    results = {}
    for setting in settings:
        pairs = build_pairs(items, setting, options.protocol, options.seed)
        scores = score_pairs(model, processor, pairs, options)
        result: dict[str, Any] = {
            "accuracy": scores.accuracy(ties, average),
            "num_pairs": len(pairs),
            "scope": scoring_scope(items, options),
            "ties": ties,
            "average": average,
        }
        if any(g is not None for g in scores.groups):
            result["group_accuracies"] = scores.group_accuracies(ties)
        results[setting] = result
    return results
