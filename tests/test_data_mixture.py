"""The two-stage mixture: stages, proportions, weights, determinism, ranks, workers and resume."""

from __future__ import annotations

import itertools

import datasets
import numpy as np
import pytest
import torch
from helpers import LAYOUT, TOKENIZER, make_speech_data, make_text_data
from torch.utils.data import DataLoader

from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.data.mixture import SmolTolkMixture
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder, TextSampleBuilder

CONTEXT = 96
SPEECH_DATA, _ = make_speech_data(num_utterances=16, seed=1)
BUILDERS = {
    "speech": [SpeechSampleBuilder(SPEECH_DATA, LAYOUT, CONTEXT)],
    "text": [
        TextSampleBuilder(make_text_data(20, seed=2), LAYOUT, TOKENIZER, CONTEXT),
        TextSampleBuilder(make_text_data(20, seed=3, column="text"), LAYOUT, TOKENIZER, CONTEXT),
    ],
    "interleaved": [InterleavedSampleBuilder(SPEECH_DATA, LAYOUT, TOKENIZER, CONTEXT)],
}


def mixture(**kwargs) -> SmolTolkMixture:
    return SmolTolkMixture(**BUILDERS, **{"seed": 0, "rank": 0, "world_size": 1, **kwargs})


def take(dataset, n: int) -> list[torch.Tensor]:
    return [sample["input_ids"] for sample in itertools.islice(iter(dataset), n)]


def kind(ids: torch.Tensor) -> str:
    """Which builder made a sample, read from its content."""
    if ids[0] == LAYOUT.speech_marker_id and (ids[1:] >= LAYOUT.speech_token_offset).all():
        return "speech"
    return "interleaved" if (ids == LAYOUT.text_marker_id).any() or ids[0] == LAYOUT.speech_marker_id else "text"


def test_stage_one_is_interleaved_then_modalities_share_each_block():
    data = mixture(stage1_samples=10)
    assert [data.stage(k) for k in (0, 9, 10)] == [1, 1, 2]
    samples = [data.sample(k)["input_ids"] for k in range(40)]
    assert [kind(ids) for ids in samples[:10]] == ["interleaved"] * 10
    for block in range(10, 40, 3):
        modalities = [data.modality(k) for k in range(block, block + 3)]
        assert sorted(modalities) == ["interleaved", "speech", "text"]
        assert [kind(ids) for ids in samples[block : block + 3]] == modalities
    assert len({tuple(data.modality(k) for k in range(b, b + 3)) for b in range(10, 400, 3)}) > 1  # random order


def test_weights_choose_datasets_within_a_modality():
    rng = np.random.default_rng(0)
    low, high = ([rng.integers(a, a + 50, 30).tolist() for _ in range(5)] for a in (1, 100))  # tell-tale ids
    text = [
        TextSampleBuilder(datasets.Dataset.from_dict({"input_ids": d}), LAYOUT, TOKENIZER, CONTEXT)
        for d in (low, high)
    ]
    data = SmolTolkMixture(speech=BUILDERS["speech"], text=text, weights={"text": [0.8, 0.2]}, rank=0, world_size=1)
    picks = [int(data.sample(k)["input_ids"].max() < 100) for k in range(600) if data.modality(k) == "text"]
    assert len(picks) == 300 and 0.72 < np.mean(picks) < 0.88
    sizes = np.array([b.size for b in BUILDERS["text"]], dtype=float)
    assert np.allclose(mixture().weights["text"], sizes / sizes.sum())  # default: proportional to size


def test_samples_are_packed_and_deterministic():
    first = take(mixture(), 12)
    assert all(ids.shape == (CONTEXT,) and not (ids == LAYOUT.speech_pad_id).any() for ids in first)
    assert all(torch.equal(a, b) for a, b in zip(first, take(mixture(), 12)))
    assert not all(torch.equal(a, b) for a, b in zip(first, take(mixture(seed=1), 12)))


def test_ranks_split_the_global_sequence():
    global_samples = take(mixture(), 12)
    rank0 = take(mixture(rank=0, world_size=2), 6)
    rank1 = take(mixture(rank=1, world_size=2), 6)
    assert all(torch.equal(a, b) for a, b in zip(rank0, global_samples[0::2]))
    assert all(torch.equal(a, b) for a, b in zip(rank1, global_samples[1::2]))
    assert not any(torch.equal(a, b) for a, b in zip(rank0, rank1))


def test_dataloader_workers_give_the_same_samples():
    collator = SmolTolkDataCollator(LAYOUT)
    serial = [b["input_ids"] for b in itertools.islice(DataLoader(mixture(), batch_size=3, collate_fn=collator), 4)]
    same_order = mixture(worker_batch_size=3)
    parallel = DataLoader(same_order, batch_size=3, num_workers=2, collate_fn=collator)
    assert all(torch.equal(a, b["input_ids"]) for a, b in zip(serial, itertools.islice(parallel, 4)))
    # Another chunk size: each round of workers x batch_size samples is the same multiset.
    other = DataLoader(mixture(), batch_size=3, num_workers=2, collate_fn=collator)
    rows = lambda batches: [tuple(row.tolist()) for batch in batches for row in batch]
    other_rows = rows(b["input_ids"] for b in itertools.islice(other, 4))
    assert sorted(other_rows) == sorted(rows(serial)) and other_rows != rows(serial)


def test_resume_continues_exactly():
    uninterrupted = take(mixture(stage1_samples=5, rank=1, world_size=2), 12)
    first = mixture(stage1_samples=5, rank=1, world_size=2)
    consumed = take(first, 7)
    state = first.state_dict()
    assert state["samples_consumed"] == 7
    resumed = mixture(stage1_samples=5, rank=1, world_size=2)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(consumed + take(resumed, 5), uninterrupted))
    with pytest.raises(ValueError, match="seed"):
        mixture(seed=1, stage1_samples=5, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match="world_size"):
        mixture(stage1_samples=5).load_state_dict(state)


def test_resume_with_workers_from_the_step_count():
    collator = SmolTolkDataCollator(LAYOUT)
    loader = lambda data: DataLoader(data, batch_size=2, num_workers=2, collate_fn=collator)
    batches = [b["input_ids"] for b in itertools.islice(loader(mixture(worker_batch_size=2)), 5)]
    resumed = mixture(worker_batch_size=2)
    resumed.load_state_dict({"samples_consumed": 3 * 2})  # 3 steps of batch 2 done
    assert all(torch.equal(a, b["input_ids"]) for a, b in zip(batches[3:], loader(resumed)))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="at least one"):
        SmolTolkMixture()
    with pytest.raises(ValueError, match="interleaved"):
        SmolTolkMixture(speech=BUILDERS["speech"], stage1_samples=10)
    with pytest.raises(ValueError, match="context_length"):
        SmolTolkMixture(speech=[SpeechSampleBuilder(SPEECH_DATA, LAYOUT, 64)], text=BUILDERS["text"])
    with pytest.raises(ValueError, match="text weights"):
        mixture(weights={"text": [1.0]})
    with pytest.raises(ValueError, match="without builders"):
        SmolTolkMixture(speech=BUILDERS["speech"], weights={"text": [1.0, 1.0]})
    with pytest.raises(ValueError, match="rank"):
        mixture(rank=2, world_size=2)


def test_rank_and_world_size_default_to_torch_distributed(monkeypatch):
    import smoltolk_hf.data.mixture as mixture_module

    built_before_init = SmolTolkMixture(**BUILDERS)
    assert (built_before_init.rank, built_before_init.world_size) == (0, 1)
    monkeypatch.setattr(mixture_module, "_distributed_rank_and_world_size", lambda: (1, 2))
    data = SmolTolkMixture(**BUILDERS)
    assert (data.rank, data.world_size) == (1, 2)
    assert all(torch.equal(a, b) for a, b in zip(take(data, 3), take(mixture(rank=1, world_size=2), 3)))
    with pytest.raises(RuntimeError, match="init_process_group"):
        next(iter(built_before_init))
