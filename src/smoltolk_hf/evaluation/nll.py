"""Speech negative log-likelihood per unit on a units dataset (the paper's LibriSpeech dev NLL, Figure 2).

Two modes:

- `"packed"`: the training loss (what Figure 2 plots). The utterances are joined in dataset order, each closed by
  the speech end token, into one stream cut into consecutive windows of `max_length` ids, each opened by
  `<|speech|>`, exactly as `SpeechSampleBuilder` packs training samples (but covering the data once, in order,
  instead of at random starts). Every unit and end token is a target, context runs across utterances inside a
  window, and the number is the speech part of the model's own loss (`speech_loss`), summed over windows and divided
  by the targets.
- `"utterance"`: each utterance alone, every unit scored from its own utterance's left context; the end token is not
  scored unless `include_eos=True`. Under `protocol="authors"` (the default) the utterance opens with the speech end
  token as BOS, as the authors' `nll_eval.py` scores sequences (`<end> u_1 ... u_n`: the token that precedes an
  utterance in a packed training stream); under `protocol="package"` with `<|speech|>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from .batching import padded_batches
from .scoring import PROTOCOLS, token_log_probs

NLL_MODES = ("packed", "utterance")


def speech_nll(
    model: Any,
    processor: Any,
    units: Iterable[Sequence[int]],
    batch_size: int = 8,
    max_length: int | None = None,
    include_eos: bool | None = None,
    mode: Literal["packed", "utterance"] = "utterance",
    protocol: Literal["authors", "package"] = "authors",
) -> dict[str, Any]:
    """Mean negative log-likelihood (nats) per scored speech token over utterances of deduplicated units.

    Args:
        units: the `units` column of a units dataset (`smoltolk tokenize`), or any unit-id sequences.
        max_length: window length in ids (default: the model's `max_position_embeddings`; pass the training
            `context_length` for the Figure 2 loss). In `"utterance"` mode, longer utterances are cut into
            consecutive windows, each restarted with `<|speech|>`.
        include_eos: score the speech end token. `"packed"` always does (as training); `"utterance"` does not by
            default.
        mode: `"packed"` (the training loss, Figure 2) or `"utterance"` (see the module docstring).
        protocol: how `"utterance"` mode opens each utterance (window): `"authors"` with the speech end token,
            `"package"` with `<|speech|>`. Not used by `"packed"` mode, whose windows are the training samples.

    Returns:
        `{"nll", "num_targets" (scored tokens), "num_utterances", "mode", "max_length", "include_eos"}`, plus
        `"protocol"` in `"utterance"` mode and `"num_windows"` in `"packed"` mode.
    """
    if mode not in NLL_MODES:
        raise ValueError(f"mode must be one of {NLL_MODES}, got {mode!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    max_length = max_length or model.config.max_position_embeddings
    if max_length < 2:
        raise ValueError(
            f"max_length={max_length} leaves no room for a unit after the opening token (<|speech|> or the "
            "speech end token)"
        )
    utterances = [list(u) for u in units]
    if not utterances:
        raise ValueError("no utterances to score")
    if mode == "packed":
        if include_eos is False:
            raise ValueError("mode='packed' scores the end tokens, as training does; drop include_eos=False")
        total, count, num_windows = _packed_nll(model, processor, utterances, batch_size, max_length)
        extra = {"num_windows": num_windows}
        include_eos = True
    else:
        include_eos = bool(include_eos)
        opening = processor.speech_eos_id if protocol == "authors" else processor.speech_marker_id
        total, count = _utterance_nll(model, processor, utterances, batch_size, max_length, include_eos, opening)
        extra = {"protocol": protocol}
    return {
        "nll": total / count,
        "num_targets": count,
        "num_utterances": len(utterances),
        "mode": mode,
        "max_length": max_length,
        "include_eos": include_eos,
        **extra,
    }


def _utterance_nll(
    model: Any,
    processor: Any,
    utterances: list[list[int]],
    batch_size: int,
    max_length: int,
    include_eos: bool,
    opening: int,
) -> tuple[float, int]:
    """Summed NLL and count of the speech targets of each utterance scored alone (`"utterance"` mode), every window
    opened by the id `opening`."""
    sequences = []
    for utterance in utterances:
        ids = processor(units=utterance, add_eos=include_eos)["input_ids"]
        body = ids[ids.index(processor.speech_marker_id) + 1 :]
        window = max_length - 1
        sequences += [[opening] + body[i : i + window] for i in range(0, len(body), window)]
    total, count = 0.0, 0
    scored = token_log_probs(model, sequences, batch_size, processor.pad_token_id, desc="speech NLL (utterances)")
    for ids, log_probs in zip(sequences, scored):
        is_speech = [j for j in range(1, len(ids)) if ids[j] >= processor.speech_token_offset]
        total -= float(log_probs[[j - 1 for j in is_speech]].double().sum())
        count += len(is_speech)
    return total, count


@torch.no_grad()
def _packed_nll(
    model: Any, processor: Any, utterances: list[list[int]], batch_size: int, max_length: int
) -> tuple[float, int, int]:
    """Summed speech loss and target count over packed windows, and the number of windows (`"packed"` mode)."""
    config = model.config
    stream = np.concatenate(
        [np.append(np.asarray(u, np.int64) + config.speech_token_offset, config.speech_eos_id) for u in utterances]
    )
    body = max_length - 1  # each window opens with <|speech|>
    windows = [
        torch.from_numpy(np.insert(stream[i : i + body], 0, config.speech_marker_id))
        for i in range(0, len(stream), body)
    ]
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for _, batch in padded_batches(windows, config, batch_size, device=device, desc="speech NLL (packed windows)"):
        out = model(**batch)
        total += float(out.speech_loss.double() * out.num_speech_targets)
        count += int(out.num_speech_targets)
    return total, count, len(windows)
