"""The authors' scoring protocol, checked against sequences and scores computed by hand from the model's logits."""

import numpy as np
import pytest
import torch
from helpers import EVAL_SENTENCES, tiny_eval_model
from helpers import eval_cloze_items as items

from smoltolk_hf.evaluation import ClozeItem, PairScores, ScoringOptions, build_pairs, evaluate_items, score_pairs
from smoltolk_hf.evaluation.scoring import encode_pair
from smoltolk_hf.processing_smoltolk import SmolTolkProcessor
from smoltolk_hf.testing_utils import byte_level_tokenizer


@pytest.fixture(scope="module")
def tiny_with_bos():
    """The tiny model with a tokenizer that has a BOS (as SmolLM2's `<|im_start|>`): the authors never use it."""
    model, _ = tiny_eval_model()
    tokenizer = byte_level_tokenizer(EVAL_SENTENCES, vocab_size=290, bos_token="<s>")
    assert tokenizer.bos_token_id is not None and len(tokenizer) <= model.config.vocab_size
    return model, SmolTolkProcessor.from_config(tokenizer, None, model.config)


def hand_score(model, ids: list[int], first_target: int) -> float:
    """Mean log-probability of ids[first_target:], each from the model's joint generation logits (the other
    modality at -inf, so the softmax is the head's own) given everything before it."""
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return float(np.mean([float(log_probs[j - 1, ids[j]]) for j in range(first_target, len(ids))]))


def hand_prefix_rows(n_items: int, seed: int = 42) -> list[tuple[int, int]]:
    """The authors' draws, restated: one default_rng(seed), for each item the correct then the incorrect
    candidate, uniform over all continuations but its own; their script draws on each of its four passes and
    scores S->T on the third."""
    rng = np.random.default_rng(seed)
    rows = list(range(2 * n_items))
    for _ in range(3):
        drawn = []
        for own in rows:
            row = rng.choice(rows)
            while row == own:
                row = rng.choice(rows)
            drawn.append(int(row))
    return [(drawn[2 * i], drawn[2 * i + 1]) for i in range(n_items)]


def test_authors_sequences_and_scores_by_hand(tiny_with_bos):
    model, processor = tiny_with_bos
    tok = processor.tokenizer
    data = items(4)

    def text(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    def speech(u):
        return (np.asarray(u) + processor.speech_token_offset).tolist()

    continuations = [t for item in data for t in (item.correct["text"], item.incorrect["text"])]
    prefix_rows = hand_prefix_rows(len(data))
    for setting in ("S", "T", "T->S", "S->T"):
        pairs = build_pairs(data, setting)
        scores = score_pairs(model, processor, pairs)
        for k, (item, pair) in enumerate(zip(data, pairs)):
            for c, role in enumerate(("correct", "incorrect")):
                cont = getattr(item, role)
                if setting == "S":
                    head, tail = speech(item.context["speech"]), speech(cont["speech"])
                elif setting == "T":
                    head, tail = text(item.context["text"]), text(" " + cont["text"])
                elif setting == "T->S":
                    head, tail = text(item.context["text"]) + [processor.speech_marker_id], speech(cont["speech"])
                else:  # 10 text tokens of another continuation (its EOS last), no marker, then the speech context
                    source = continuations[prefix_rows[k][c]]
                    prefix = (text(" " + source) + [tok.eos_token_id])[-10:]
                    assert len(prefix) <= 10 and prefix[-1] == tok.eos_token_id  # [-10:] as theirs
                    head = prefix + speech(item.context["speech"]) + [processor.text_marker_id]
                    tail = text(" " + cont["text"])
                ids, targets = encode_pair(processor, pair, ScoringOptions())[c]
                assert ids == head + tail and ids[0] != tok.bos_token_id
                assert targets == list(range(len(head), len(ids)))
                expected = hand_score(model, head + tail, len(head))
                assert getattr(scores, role)[k] == pytest.approx(expected, abs=1e-5)


def test_authors_whole_utterances_start_with_the_end_token(tiny_with_bos):
    model, processor = tiny_with_bos
    units = np.array([3, 1, 4, 1, 5])
    item = ClozeItem(
        id="x",
        correct={"speech": units, "text": "the cat sat"},
        incorrect={"speech": units[::-1].copy(), "text": "cat the sat"},
    )
    (speech_pair,) = build_pairs([item], "S")
    ids, targets = encode_pair(processor, speech_pair, ScoringOptions())[0]
    assert ids == [processor.speech_eos_id] + (units + processor.speech_token_offset).tolist()  # as nll_eval.py
    assert targets == list(range(1, 6))
    score = score_pairs(model, processor, [speech_pair]).correct[0]
    assert score == pytest.approx(hand_score(model, ids, 1), abs=1e-5)
    (text_pair,) = build_pairs([item], "T")
    ids, _ = encode_pair(processor, text_pair, ScoringOptions())[0]
    assert ids[0] == processor.tokenizer.eos_token_id and processor.tokenizer.bos_token_id not in ids
    # The package protocol keeps the processor's encoding: tokenizer BOS first, then <|speech|>.
    ids, _ = encode_pair(processor, speech_pair, ScoringOptions(protocol="package"))[0]
    assert ids[:2] == [processor.tokenizer.bos_token_id, processor.speech_marker_id]


def test_prefixes_are_seeded_drawn_per_candidate_and_package_has_none():
    data = items(6)
    first = [p.prefixes for p in build_pairs(data, "S->T")]
    assert first == [p.prefixes for p in build_pairs(data, "S->T")]  # reproducible
    assert first != [p.prefixes for p in build_pairs(data, "S->T", seed=7)]
    assert any(c != i for c, i in first)  # drawn separately for the two candidates
    package = build_pairs(data, "S->T", protocol="package")
    assert all(p.prefixes is None for p in package)
    assert package[0].correct == [("text", data[0].correct["text"])]  # no leading space: the package's old S->T
    assert build_pairs(data, "S->T")[0].correct == [("text", " " + data[0].correct["text"])]  # T's token array


def test_ties_and_averaging_per_benchmark_by_hand():
    # sBLIMP-like: type a has pair 1 (two voices: win, tie) and pair 2 (one voice: loss); type b has pair 3 (win).
    scores = PairScores(
        ids=["1/v1", "1/v2", "2/v1", "3/v1"],
        correct=np.array([1.0, 2.0, 0.0, 5.0]),
        incorrect=np.array([0.0, 2.0, 1.0, 4.0]),
        groups=["a", "a", "a", "b"],
        base_ids=["1", "1", "2", "3"],
    )
    # Toolkit: tie 0.5; pair 1 = (1 + 0.5) / 2 = 0.75, pair 2 = 0; type a = 0.375, type b = 1; mean of types.
    assert scores.accuracy("half", "macro") == pytest.approx((0.375 + 1.0) / 2)
    assert scores.group_accuracies("half") == {"a": pytest.approx(0.375), "b": 1.0}
    # Tie wrong: pair 1 = 0.5; micro over base ids = (0.5 + 0 + 1) / 3.
    assert scores.accuracy("wrong", "micro") == pytest.approx(1.5 / 3)
    # The options resolve each benchmark's rule under each protocol; explicit options win.
    from smoltolk_hf.evaluation import BENCHMARKS

    assert ScoringOptions().rules(BENCHMARKS["blimp"]) == ("half", "macro")
    assert ScoringOptions().rules(BENCHMARKS["sstorycloze"]) == ("wrong", "micro")
    assert ScoringOptions(protocol="package").rules(BENCHMARKS["blimp"]) == ("wrong", "macro")
    assert ScoringOptions(ties="wrong").rules(BENCHMARKS["blimp"]) == ("wrong", "macro")


def test_evaluate_items_records_scope_and_rules():
    model, processor = tiny_eval_model()
    whole = [
        ClozeItem(id=str(i), correct=it.correct, incorrect=it.incorrect, group="g", base_id=str(i // 2))
        for i, it in enumerate(items(4))
    ]
    result = evaluate_items(model, processor, whole, ["S"], benchmark="blimp")["S"]
    assert (result["scope"], result["ties"], result["average"]) == ("whole utterance", "half", "macro")
    result = evaluate_items(model, processor, items(4), ["T->S"])["T->S"]
    assert (result["scope"], result["ties"], result["average"]) == ("continuation", "wrong", "micro")
    result = evaluate_items(model, processor, items(4), ["T->S"], ScoringOptions(scope="sequence"))["T->S"]
    assert result["scope"] == "context and continuation"
