"""The two-stage training data mixture (paper sections 3.2 and 4.1, appendix B).

`SmolTolkMixture` is an infinite `torch.utils.data.IterableDataset` over packed samples. Its design rests
on one rule: **global sample `k` is a pure function of `(seed, k)`** (and of the builders). Everything else
follows from where each consumer starts in the sequence `k = 0, 1, 2, ...`:

- **Stages.** Samples `k < stage1_samples` are stage 1 (interleaved only); later samples are stage 2, where
  each consecutive block of one sample per modality holds every modality once, in a random order: any
  global batch whose size is a multiple of the number of modalities has exactly equal proportions
  (appendix B; paper: a third each of speech, text and interleaved). Because the stage is a function of
  `k`, DataLoader worker processes need no signal: the switch happens at the same sample in every process.
  With Trainer-style training, `stage1_samples = stage1_steps * total_train_batch_size` (per-device batch
  x gradient accumulation x processes), so the data switches exactly when optimizer step `stage1_steps`
  begins, whether each rank reads its own stream or one process feeds them all.
- **Datasets within a modality** are drawn with `weights` (default: proportional to each builder's `size`,
  i.e. uniform over tokens, as the paper does for speech).
- **Ranks.** Rank `r` of `world_size` reads `k = r, r + world_size, r + 2 * world_size, ...` ("rank-local"
  index `j` -> `k = r + world_size * j`): ranks never share a sample, and ranks stepping in lockstep jointly
  consume the global sequence in order. `rank`/`world_size` default to `torch.distributed`'s when it is
  initialized at construction, else 0/1 (iterating raises if it was initialized later: build the mixture
  after `init_process_group`, or pass them). When one process feeds all ranks (accelerate's
  `dispatch_batches`, the HF Trainer's default for iterable datasets on several processes), pass
  `rank=0, world_size=1`: that process's stream is then the global sequence.
- **DataLoader workers.** Worker `w` of `n` yields the rank-local indices in chunks of `worker_batch_size`:
  chunks `w, w + n, w + 2n, ...`. The DataLoader takes one batch from each worker in turn, so with
  `worker_batch_size` equal to the DataLoader's `batch_size` the batches come out in exactly the order of
  `num_workers=0`; with another chunk size each round of `n * batch_size` samples is the same multiset,
  in another order.
- **Resume.** `state_dict()` holds `samples_consumed`, the number of rank-local samples yielded by this
  object's iterators in this process. `load_state_dict()` makes the next iterator start at that rank-local
  index: the samples that follow are exactly those an uninterrupted run would have yielded after its first
  `samples_consumed`, for the same seed, builders, `stage1_samples` and world size (checked). Starting is
  O(1): nothing is replayed. With `num_workers > 0` the samples are yielded in worker processes, so the
  main process's counter does not move: set `samples_consumed` from the step count instead,
  `optimizer_steps * per_device_batch_size * gradient_accumulation_steps` (times the number of processes
  for a stream that feeds them all). With the HF Trainer, either resume that way with
  `ignore_data_skip=True`, or leave the Trainer to skip the consumed batches by regenerating them (same
  result, slower); never both.

Example:
    >>> mixture = SmolTolkMixture(
    ...     speech=[SpeechSampleBuilder(librilight, config)],
    ...     text=[TextSampleBuilder(fineweb, config, tok), TextSampleBuilder(cosmopedia, config, tok)],
    ...     interleaved=[InterleavedSampleBuilder(libriheavy, config, tok)],
    ...     weights={"text": [0.7, 0.15]}, seed=0, stage1_samples=1000 * 512,
    ... )
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .samples import PackedSampleBuilder

MODALITIES = ("speech", "text", "interleaved")
_SAMPLE_STREAM, _ORDER_STREAM = 0, 1  # separate random streams for sample content and modality order


def _distributed_rank_and_world_size() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SmolTolkMixture(IterableDataset):
    """Infinite, deterministic two-stage mixture of speech, text and interleaved samples (module docstring).

    Args:
        speech, text, interleaved: sample builders of each modality; a modality without builders is left
            out of stage 2 (the others then share it equally).
        weights: per modality, one sampling weight per builder (normalised); default `builder.size`.
        seed: the seed every sample derives from.
        stage1_samples: number of global samples in stage 1 (interleaved only); 0 skips stage 1.
        rank, world_size: this data-parallel stream; default from `torch.distributed` if initialized,
            else 0 and 1.
        worker_batch_size: chunk of consecutive samples each DataLoader worker yields; set it to the
            DataLoader's batch size to get the same order for any number of workers.
    """

    def __init__(
        self,
        speech: Sequence[PackedSampleBuilder] = (),
        text: Sequence[PackedSampleBuilder] = (),
        interleaved: Sequence[PackedSampleBuilder] = (),
        *,
        weights: Mapping[str, Sequence[float]] | None = None,
        seed: int = 0,
        stage1_samples: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        worker_batch_size: int = 1,
    ):
        sources = {"speech": list(speech), "text": list(text), "interleaved": list(interleaved)}
        self.modalities = tuple(m for m in MODALITIES if sources[m])
        if not self.modalities:
            raise ValueError("SmolTolkMixture needs at least one sample builder.")
        if stage1_samples < 0 or (stage1_samples > 0 and not sources["interleaved"]):
            raise ValueError("stage1_samples must be >= 0, and stage 1 needs interleaved builders.")
        context_lengths = {b.context_length for m in self.modalities for b in sources[m]}
        if len(context_lengths) != 1:
            raise ValueError(f"All builders must share one context_length, got {sorted(context_lengths)}.")
        unknown = set(weights or {}) - set(self.modalities)
        if unknown:
            raise ValueError(f"weights given for modalities without builders: {sorted(unknown)}.")
        if worker_batch_size < 1:
            raise ValueError(f"worker_batch_size must be >= 1, got {worker_batch_size}.")
        self.sources = {m: sources[m] for m in self.modalities}
        self.weights = {m: self._normalise(m, (weights or {}).get(m)) for m in self.modalities}
        self.context_length = context_lengths.pop()
        self.seed, self.stage1_samples, self.worker_batch_size = seed, stage1_samples, worker_batch_size
        self._from_distributed = rank is None or world_size is None
        distributed = _distributed_rank_and_world_size()
        self.rank = distributed[0] if rank is None else rank
        self.world_size = distributed[1] if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}.")
        self.samples_consumed = 0

    def _normalise(self, modality: str, weights: Sequence[float] | None) -> np.ndarray:
        builders = self.sources[modality]
        weights = np.asarray([b.size for b in builders] if weights is None else weights, dtype=np.float64)
        if weights.shape != (len(builders),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"{modality} weights must be {len(builders)} non-negative numbers with a positive sum.")
        return weights / weights.sum()

    def stage(self, k: int) -> int:
        """Training stage (1 or 2) of global sample `k`."""
        return 1 if k < self.stage1_samples else 2

    def modality(self, k: int) -> str:
        """Modality of global sample `k`: interleaved in stage 1; in stage 2, every block of
        `len(modalities)` samples holds each modality once, in a random order."""
        if self.stage(k) == 1:
            return "interleaved"
        block, slot = divmod(k - self.stage1_samples, len(self.modalities))
        order = np.random.default_rng([self.seed, _ORDER_STREAM, block]).permutation(len(self.modalities))
        return self.modalities[order[slot]]

    def sample(self, k: int) -> dict[str, torch.Tensor]:
        """Global sample `k`: a builder of its modality drawn with the weights, then its packed sample."""
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, k])
        modality = self.modality(k)
        builders = self.sources[modality]
        return builders[rng.choice(len(builders), p=self.weights[modality])].build(rng)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._from_distributed and _distributed_rank_and_world_size() != (self.rank, self.world_size):
            raise RuntimeError(
                "torch.distributed was initialized after SmolTolkMixture was built, so every rank would read "
                "the same samples: build it after init_process_group, or pass rank and world_size."
            )
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        start, chunk = self.samples_consumed, self.worker_batch_size
        for first in range(start + worker_id * chunk, 2**62, num_workers * chunk):
            for j in range(first, first + chunk):
                self.samples_consumed = j + 1  # counted before yielding: the consumer holds sample j
                yield self.sample(self.rank + self.world_size * j)

    def state_dict(self) -> dict[str, Any]:
        """Resume state: rank-local samples consumed, plus what must match for the resume to be exact."""
        return {
            "samples_consumed": self.samples_consumed,
            "seed": self.seed,
            "stage1_samples": self.stage1_samples,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Makes the next iterator continue after `state["samples_consumed"]` rank-local samples."""
        mine = self.state_dict()
        mismatched = [
            key for key in ("seed", "stage1_samples", "world_size") if key in state and state[key] != mine[key]
        ]
        if mismatched:
            raise ValueError(f"Cannot resume: {', '.join(f'{k}={state[k]} (now {mine[k]})' for k in mismatched)}.")
        if state["samples_consumed"] < 0:
            raise ValueError(f"samples_consumed must be >= 0, got {state['samples_consumed']}.")
        self.samples_consumed = int(state["samples_consumed"])
