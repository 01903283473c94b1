"""Pair scoring: hand-computed log-probabilities, known preferences, batching, options."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import eval_cloze_items as cloze_items
from helpers import tiny_eval_model

from smoltolk_hf import SmolTolkForCausalLM
from smoltolk_hf.evaluation import (
    ClozeItem,
    ScoringOptions,
    build_pairs,
    evaluate_items,
    score_pairs,
)
from smoltolk_hf.evaluation.scoring import encode_candidate


@pytest.fixture(scope="module")
def tiny():
    return tiny_eval_model()


@pytest.mark.parametrize("setting", ["S", "T", "T->S", "S->T"])
def test_package_protocol_score_is_mean_of_hand_computed_continuation_log_probs(tiny, setting):
    model, processor = tiny
    pair = build_pairs(cloze_items(1), setting, protocol="package")[0]
    context_ids = processor(segments=pair.context)["input_ids"]
    ids = processor(segments=pair.context + pair.correct)["input_ids"]
    # Independent path: the model's own joint (generation) logits, normalised over the whole joint vocabulary.
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    markers = {processor.text_marker_id, processor.speech_marker_id}
    expected = [float(log_probs[j - 1, ids[j]]) for j in range(len(context_ids), len(ids)) if ids[j] not in markers]
    for reduction, reference in (
        ("mean", np.mean(expected)),
        ("sum", np.sum(expected)),
    ):
        scores = score_pairs(model, processor, [pair], ScoringOptions(reduction=reduction, protocol="package"))
        assert scores.correct[0] == pytest.approx(reference, abs=1e-5)


def test_markers_are_never_scored_and_scope(tiny):
    _, processor = tiny
    pair = build_pairs(cloze_items(1), "T->S")[0]
    ids, targets = encode_candidate(processor, pair.context, pair.correct)
    marker_position = ids.index(processor.speech_marker_id)
    assert marker_position not in targets and targets[0] == marker_position + 1
    assert targets == list(range(marker_position + 1, len(ids)))
    _, whole = encode_candidate(processor, pair.context, pair.correct, scope="sequence")
    assert whole == [j for j in range(1, len(ids)) if j != marker_position]


@pytest.mark.parametrize("protocol", ["authors", "package"])
def test_batched_equals_one_by_one(tiny, protocol):
    model, processor = tiny
    for setting in ("S", "T", "T->S", "S->T"):
        pairs = build_pairs(cloze_items(4), setting, protocol)
        batched = score_pairs(model, processor, pairs, ScoringOptions(batch_size=3, protocol=protocol))
        single = score_pairs(model, processor, pairs, ScoringOptions(batch_size=1, protocol=protocol))
        np.testing.assert_allclose(batched.correct, single.correct, atol=1e-5, rtol=0)
        np.testing.assert_allclose(batched.incorrect, single.incorrect, atol=1e-5, rtol=0)


def _biased(
    model: SmolTolkForCausalLM,
    text_ids: list[int],
    units: list[int],
    bias: float = 30.0,
):
    """Adds a logit bias to some text tokens and speech units: continuations made of them are preferred."""
    cfg = model.config
    head = torch.nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=True)
    head.weight = model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[text_ids] = bias
    model.lm_head = head
    speech_bias = torch.zeros(cfg.speech_vocab_size)
    speech_bias[units] = bias
    weight = model.model.speech_embed_tokens.weight
    model.speech_logits = lambda state: F.linear(state, weight) + speech_bias
    return model


def test_model_with_known_preference_gets_expected_accuracy():
    model, processor = tiny_eval_model(seed=3)
    favoured_text = "the cat sat on the mat"
    text_ids = processor.tokenizer(" " + favoured_text, add_special_tokens=False)["input_ids"]
    text_ids += processor.tokenizer(favoured_text, add_special_tokens=False)["input_ids"]
    model = _biased(model, sorted(set(text_ids)), [1, 2])
    items = [
        ClozeItem(
            id=str(i),
            context={"text": "she went home", "speech": np.array([5, 7, 9])},
            correct={"text": favoured_text, "speech": np.array([1, 2, 1, 2])},
            incorrect={
                "text": "a dog ran in the park",
                "speech": np.array([8, 10, 4, 11]),
            },
        )
        for i in range(3)
    ]
    results = evaluate_items(model, processor, items)
    assert {s: r["accuracy"] for s, r in results.items()} == {
        "S": 1.0,
        "T": 1.0,
        "T->S": 1.0,
        "S->T": 1.0,
    }
    swapped = [ClozeItem(id=i.id, context=i.context, correct=i.incorrect, incorrect=i.correct) for i in items]
    assert all(r["accuracy"] == 0.0 for r in evaluate_items(model, processor, swapped).values())


def test_ties_and_macro_average(tiny):
    model, processor = tiny
    same = ClozeItem(
        id="tie",
        correct={"speech": np.array([1, 2, 3])},
        incorrect={"speech": np.array([1, 2, 3])},
        group="a",
    )
    others = [ClozeItem(id=i.id, correct=i.correct, incorrect=i.incorrect, group="b") for i in cloze_items(3)]
    pairs = build_pairs([same] + others, "S")
    scores = score_pairs(model, processor, pairs)
    assert scores.outcomes("wrong")[0] == 0.0 and scores.outcomes("half")[0] == 0.5
    b = scores.outcomes("half")[1:].mean()
    assert scores.accuracy("half", "macro") == pytest.approx((0.5 + b) / 2)
    assert scores.accuracy("half", "micro") == pytest.approx((0.5 + 3 * b) / 4)
    with pytest.raises(ValueError, match="reduction"):
        ScoringOptions(reduction="median")


def test_whole_utterance_items_refuse_cross_modal_settings(tiny):
    item = ClozeItem(id="x", correct={"text": "a b"}, incorrect={"text": "b a"})
    with pytest.raises(ValueError, match="whole utterance"):
        build_pairs([item], "T->S")
    with pytest.raises(ValueError, match="needs speech"):
        build_pairs([item], "S")
