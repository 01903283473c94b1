"""The demo package's held-out text check: the shipped stories and their scores, checked by hand."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_eval_model

from smoltolk_hf.demo.text_check import HELDOUT_STORIES, text_check
from smoltolk_hf.evaluation.pairs import load_benchmark


def test_heldout_stories_are_distinct_text_pairs():
    items = load_benchmark(HELDOUT_STORIES)
    assert len(items) == 42 and len({item.id for item in items}) == 42
    assert len({item.context["text"] for item in items}) == 42
    for item in items:
        assert set(item.context) == set(item.correct) == set(item.incorrect) == {"text"}
        assert item.correct["text"] != item.incorrect["text"]


def _ending_log_prob(model, tokenizer, context: str, ending: str) -> float:
    """Mean log-probability per token of `ending` after `context` (the authors' T: no BOS, a leading space)."""
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    ending_ids = tokenizer(" " + ending, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + ending_ids])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        log_probs = model.lm_head(hidden)[0, :-1].float().log_softmax(-1)
    targets = ids[0, 1:]
    picked = log_probs.gather(-1, targets[:, None])[:, 0][len(context_ids) - 1 :]
    return float(picked.double().mean())


def test_text_check_equals_hand_scores(tmp_path):
    model, processor = tiny_eval_model(seed=3)
    stories = [
        ("the cat sat on the mat.", "it fell asleep.", "the moon is made of cheese."),
        ("a dog ran in the park.", "it chased a ball.", "the ocean froze at noon."),
        ("she opened the door.", "a friend walked in.", "numbers sing in the rain."),
    ]
    path = tmp_path / "stories.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "context_text": c, "correct_text": r, "incorrect_text": w}) + "\n"
            for i, (c, r, w) in enumerate(stories)
        )
    )
    result = text_check(model, processor, path)
    right = np.array([_ending_log_prob(model, processor.tokenizer, c, r) for c, r, _ in stories])
    wrong = np.array([_ending_log_prob(model, processor.tokenizer, c, w) for c, _, w in stories])
    assert result["num_pairs"] == 3
    assert result["accuracy"] == pytest.approx(float(np.mean(right > wrong)))
    assert result["mean_margin"] == pytest.approx(float(np.mean(right - wrong)), abs=1e-5)
    assert result["ending_nll"] == pytest.approx(float(-np.mean(right)), abs=1e-5)
