"""Speech negative log-likelihood per unit on a units dataset (the paper's LibriSpeech dev NLL, Figure 2)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .scoring import token_log_probs


def speech_nll(
    model: Any,
    processor: Any,
    units: Iterable[Sequence[int]],
    batch_size: int = 8,
    max_length: int | None = None,
    include_eos: bool = False,
) -> dict[str, float]:
    """Mean negative log-likelihood (nats) per speech unit over utterances of deduplicated units.

    Each utterance is `<|speech|> u_1 ... u_n` (plus the speech end with `include_eos`), every unit scored by the
    speech head from its left context. Utterances longer than `max_length` ids (default: the model's
    `max_position_embeddings`) are cut into consecutive windows, each restarted with `<|speech|>`.

    Args:
        units: the `units` column of a units dataset (`smoltolk tokenize`), or any unit-id sequences.

    Returns:
        `{"nll": mean NLL per unit, "num_units": scored units, "num_utterances": utterances}`.
    """
    max_length = max_length or model.config.max_position_embeddings
    sequences = []
    num_utterances = 0
    for utterance in units:
        num_utterances += 1
        ids = processor(units=list(utterance), add_eos=include_eos)["input_ids"]
        prefix, body = (
            ids[: ids.index(processor.speech_marker_id) + 1],
            ids[ids.index(processor.speech_marker_id) + 1 :],
        )
        window = max_length - len(prefix)
        if window < 1:
            raise ValueError(f"max_length={max_length} leaves no room for units after the prefix {prefix}")
        sequences += [prefix + body[i : i + window] for i in range(0, len(body), window)]
    if not sequences:
        raise ValueError("no utterances to score")
    total, count = 0.0, 0
    for ids, log_probs in zip(sequences, token_log_probs(model, sequences, batch_size, processor.pad_token_id)):
        is_speech = [j for j in range(1, len(ids)) if ids[j] >= processor.speech_token_offset]
        total -= float(log_probs[[j - 1 for j in is_speech]].double().sum())
        count += len(is_speech)
    return {"nll": total / count, "num_units": count, "num_utterances": num_utterances}
