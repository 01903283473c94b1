"""Batches joint-id samples for SmolTolk training and evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .samples import IGNORE_INDEX, TokenLayout, labels_from_ids


@dataclass
class SmolTolkDataCollator:
    """Stacks packed samples; pads samples of different lengths.

    Each feature has `input_ids` (joint ids) and optionally `labels` (default: the ids, with markers and
    speech pad set to -100). Samples that all have the batch length (packed samples) are stacked as they
    are, with no `attention_mask`, so attention keeps its unmasked fast path. Otherwise `input_ids` are
    padded with `pad_token_id` (default: the speech pad id, never a target), `labels` with -100, and an
    `attention_mask` marks the real tokens. The batch length is rounded up to `pad_to_multiple_of`.

    Raises `ValueError` on ids outside the joint vocabulary, labels outside it (other than -100), or
    labels whose shape differs from the ids', naming the feature's index in the batch and, when the feature
    carries a `dataset` entry (a name or path), that dataset.
    """

    layout: TokenLayout
    pad_token_id: int | None = None
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        if self.pad_token_id is None:
            self.pad_token_id = self.layout.speech_pad_id
        if not 0 <= self.pad_token_id <= self.layout.speech_pad_id:
            raise ValueError(
                f"pad_token_id must be a joint id in [0, {self.layout.speech_pad_id}], got {self.pad_token_id}."
            )
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}.")
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1, got {self.pad_to_multiple_of}.")

    def _validated(self, feature: Mapping[str, Any], index: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = f"feature {index}" + (f" (dataset {feature['dataset']!r})" if feature.get("dataset") else "")
        input_ids = self._ids(feature["input_ids"], "input_ids", where)
        if input_ids.ndim != 1 or len(input_ids) == 0:
            raise ValueError(
                f"{where}: input_ids must be a non-empty 1-D sequence, got shape {tuple(input_ids.shape)}."
            )
        if input_ids.min() < 0 or input_ids.max() > self.layout.speech_pad_id:
            bad = input_ids[(input_ids < 0) | (input_ids > self.layout.speech_pad_id)][0].item()
            raise ValueError(
                f"{where}: input_ids must be joint ids in [0, {self.layout.speech_pad_id}], got {bad}; "
                "build samples with the sample builders of this model's config."
            )
        if "labels" not in feature or feature["labels"] is None:
            return input_ids, labels_from_ids(input_ids, self.layout)
        labels = self._ids(feature["labels"], "labels", where)
        if labels.shape != input_ids.shape:
            raise ValueError(
                f"{where}: labels shape {tuple(labels.shape)} differs from input_ids shape {tuple(input_ids.shape)}."
            )
        targets = labels[labels != IGNORE_INDEX]
        if len(targets) and (targets.min() < 0 or targets.max() > self.layout.speech_pad_id):
            bad = targets[(targets < 0) | (targets > self.layout.speech_pad_id)][0].item()
            raise ValueError(
                f"{where}: labels must be -100 or joint ids in [0, {self.layout.speech_pad_id}], got {bad}."
            )
        return input_ids, labels

    @staticmethod
    def _ids(values: Any, name: str, where: str) -> torch.Tensor:
        """`values` as an int64 tensor; floats and booleans are refused, never truncated."""
        tensor = torch.as_tensor(values)
        if tensor.numel() and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
            raise ValueError(f"{where}: {name} must hold integer ids, got {tensor.dtype} values.")
        return tensor.to(torch.long)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty list of features.")
        pairs = [self._validated(feature, index) for index, feature in enumerate(features)]
        lengths = [len(input_ids) for input_ids, _ in pairs]
        length = max(lengths)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        if all(n == length for n in lengths):
            return {"input_ids": torch.stack([i for i, _ in pairs]), "labels": torch.stack([l for _, l in pairs])}

        batch = {
            "input_ids": torch.full((len(pairs), length), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(pairs), length), IGNORE_INDEX, dtype=torch.long),
            "attention_mask": torch.zeros((len(pairs), length), dtype=torch.long),
        }
        for row, ((input_ids, labels), n) in enumerate(zip(pairs, lengths)):
            span = slice(0, n) if self.padding_side == "right" else slice(length - n, length)
            batch["input_ids"][row, span] = input_ids
            batch["labels"][row, span] = labels
            batch["attention_mask"][row, span] = 1
        return batch
