"""The one batching loop of every evaluation: length-sorted, right-padded batches with a progress bar.

Sequences are sorted by decreasing length (so a batch wastes little on padding) and padded by the training
collator (`SmolTolkDataCollator`: speech pad in the ids, -100 in the labels, an attention mask), so a sequence's
result does not depend on the batch it lands in. Progress goes to stderr through tqdm (`TQDM_DISABLE=1` silences it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.collator import SmolTolkDataCollator


def padded_batches(
    sequences: Sequence[Sequence[int]],
    layout: Any,
    batch_size: int = 8,
    labels: Sequence[Sequence[int]] | None = None,
    device: torch.device | str | None = None,
    desc: str = "evaluating",
    pad_token_id: int | None = None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yields `(rows, batch)`: the indices into `sequences` of each batch and its padded tensors on `device`.

    Args:
        sequences: joint ids (any lengths).
        layout: the joint id layout (`model.config`).
        labels: per sequence, the ids to score with -100 elsewhere (default: the ids, markers excluded).
        desc: the progress bar's label.
        pad_token_id: the padding id (default: the speech pad; padding is masked out either way).

    `batch` holds `input_ids`, `labels` and `attention_mask` (all ones when no padding was needed).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    collator = SmolTolkDataCollator(layout, pad_token_id=pad_token_id)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    with tqdm(total=len(order), desc=desc, unit="seq", leave=False) as progress:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collator(
                [{"input_ids": sequences[i], "labels": None if labels is None else labels[i]} for i in rows]
            )
            batch.setdefault("attention_mask", torch.ones_like(batch["input_ids"]))
            yield rows, {name: tensor.to(device) for name, tensor in batch.items()}
            progress.update(len(rows))
