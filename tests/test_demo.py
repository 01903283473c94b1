"""The demo package's held-out text check: the shipped stories and their scores, checked by hand."""

import json
import os

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


def test_unigram_cross_entropy_by_hand():
    from smoltolk_hf.demo.metrics import unigram_cross_entropy

    # 2 units + end token; training counts with add-one: unit0 1+3, unit1 1+1, end 1+2 -> 4/9, 2/9, 3/9.
    train = [[0, 0, 1], [0]]
    heldout = [[1, 0]]  # targets: unit1, unit0, end
    expected = -(np.log(2 / 9) + np.log(4 / 9) + np.log(3 / 9)) / 3
    assert unigram_cross_entropy(train, heldout, 2) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no held-out"):
        unigram_cross_entropy(train, [], 2)


def test_selector_state_uniform_and_collapsed():
    from smoltolk_hf.demo.metrics import selector_state
    from smoltolk_hf.evaluation.segmentation import layer_weights

    model, processor = tiny_eval_model(seed=1)
    units = [[1, 2, 3, 4], [5, 6, 7]]
    num_layers = model.config.num_hidden_layers
    selector = model.model.layer_pooling.selector
    with torch.no_grad():
        selector.weight.zero_()
        selector.bias.zero_()
    uniform = selector_state(layer_weights(model, processor, units))
    assert uniform["mean_max_weight"] == pytest.approx(1 / num_layers)
    assert uniform["entropy"] == pytest.approx(np.log(num_layers)) == pytest.approx(uniform["max_entropy"])
    assert uniform["mean_layer"] == pytest.approx((num_layers + 1) / 2)
    with torch.no_grad():
        selector.bias[num_layers - 1] = 100.0  # all weight on the last layer at every position
    collapsed = selector_state(layer_weights(model, processor, units))
    assert collapsed["mean_max_weight"] == pytest.approx(1.0) and collapsed["entropy"] == pytest.approx(0, abs=1e-6)
    assert collapsed["peak_layer"] == num_layers and collapsed["last_layer_share"] == 1.0
    assert collapsed["mean_layer"] == pytest.approx(num_layers)


def test_random_peaks_scores_match_the_peak_count():
    from smoltolk_hf.demo.metrics import random_peaks_scores

    # Two clear peaks in the first utterance, none in the second: random boundaries come 2 at a time.
    weights = [np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]), np.zeros(5)]
    reference = [np.array([1, 4]), np.array([2])]
    result = random_peaks_scores(weights, reference, prominence=0.5, draws=2000, tolerance=0)
    assert result["num_peaks"] == 2 and result["draws"] == 2000
    # Every draw predicts 2 boundaries for 3 reference ones: the over-segmentation is exactly 2 / 3 - 1.
    assert result["over_segmentation"] == pytest.approx(2 / 3 - 1)
    # 2 of the positions 1..5 at random, 2 of them right: expected precision 2/5, recall (2 * 2/5) / 3.
    assert result["precision"] == pytest.approx(2 / 5, abs=0.03)
    assert result["recall"] == pytest.approx(4 / 15, abs=0.03)
    # A spread selector's omega^(L): the same shape 1000 times flatter around 1/30 has no peak of raw prominence
    # 0.5, and the same 2 once each utterance is rescaled to [0, 1].
    flat = [1 / 30 + w / 1000 for w in weights]
    assert random_peaks_scores(flat, reference, prominence=0.5)["num_peaks"] == 0
    assert random_peaks_scores(flat, reference, prominence=0.5, rescale=True)["num_peaks"] == 2


@pytest.mark.parametrize("preset", [None, "smoltolk-150m", "baseline-135m"])
def test_demo_training_config_is_a_valid_training_config(preset):
    from smoltolk_hf.demo.training import training_config
    from smoltolk_hf.training.config import load_config
    from smoltolk_hf.training.train import training_arguments

    data = {"speech_tokenizer": "tok", "units": "units", "text": "text"}
    config = load_config(training_config(data, "run", 128, 2, 10, 20, seed=3, preset=preset))
    assert config.model.from_text_model == "embedded" and config.model.preset == preset
    assert config.data.context_length == 128 and config.stages.stage1_steps == 10
    args = training_arguments(config.training)  # the Trainer options are valid TrainingArguments
    assert args.max_steps == 30 and args.seed == 3 and args.output_dir == "run"


def aligned_rows(num_rows: int = 3):
    """A units dataset of `num_rows` word-aligned utterances (3 random units of 12 per word, one frame each)."""
    from datasets import Dataset
    from helpers import EVAL_SENTENCES

    rng = np.random.default_rng(0)
    rows = {k: [] for k in ("id", "units", "durations", "text", "words", "word_end_times", "frame_rate")}
    for i, sentence in enumerate(EVAL_SENTENCES[:num_rows]):
        words = sentence.split()
        units = rng.integers(0, 12, 3 * len(words)).tolist()
        rows["id"].append(f"u{i}")
        rows["units"].append(units)
        rows["durations"].append([1] * len(units))
        rows["text"].append(sentence)
        rows["words"].append(words)
        rows["word_end_times"].append([3 * (w + 1) / 25 for w in range(len(words))])
        rows["frame_rate"].append(25.0)
    return Dataset.from_dict(rows)


def test_demo_evaluation_without_selector(tmp_path):
    """baseline-135m has no selector: the cloze set is scored, segmentation and Figure 5 are skipped."""
    from smoltolk_hf.demo.evaluation import run_demo_evaluation

    model, processor = tiny_eval_model(use_layer_pooling=False, use_dynamic_pooling=False)
    result = run_demo_evaluation(model, processor, aligned_rows(), tmp_path)
    assert set(result["accuracy"]) == {"S", "T", "T->S", "S->T"} and result["num_pairs"] == 3
    assert result["segmentation"] is None and result["random_peaks"] is None and result["figure"] is None
    assert not list(tmp_path.iterdir())


def test_demo_segmentation_finds_peaks_on_a_spread_selector(tmp_path):
    """A fresh selector spreads its weight (omega^(L) within a hair of 1/L): no raw peak clears the smallest
    prominence of the grid, so the demo peaks on each utterance's rescaled omega^(L), and the random baseline gets
    as many peaks."""
    from smoltolk_hf.demo.evaluation import run_demo_evaluation
    from smoltolk_hf.evaluation.segmentation import PROMINENCE_GRID, detect_peaks, layer_weights

    model, processor = tiny_eval_model()
    with torch.no_grad():  # a spread selector: its logits 1000 times smaller, omega^(L) = 1/L + O(1e-3)
        model.model.layer_pooling.selector.weight.mul_(1e-3)
        model.model.layer_pooling.selector.bias.zero_()
    rows = aligned_rows(4)
    omega = [w[:, -1] for w in layer_weights(model, processor, rows["units"])]
    assert sum(len(detect_peaks(w, PROMINENCE_GRID[0])) for w in omega) == 0  # the old raw result: F1 0
    result = run_demo_evaluation(model, processor, rows, tmp_path)
    segmentation, random_peaks = result["segmentation"], result["random_peaks"]
    assert segmentation["rescale"] and segmentation["num_utterances"] == 4
    expected = sum(len(detect_peaks(w, segmentation["prominence"], rescale=True)) for w in omega)
    assert random_peaks["num_peaks"] == expected > 0
    assert segmentation["f1"] > 0 and os.path.exists(result["figure"])
