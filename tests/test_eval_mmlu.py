"""MMLU wiring: lm-evaluation-harness on SmolTolk's text path, checked on a local multiple-choice task."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_eval_model

from smoltolk_hf.evaluation.mmlu import text_causal_lm
from smoltolk_hf.evaluation.scoring import token_log_probs

QUESTIONS = [
    ("the cat sat on the", ["mat", "park", "apple", "home"], 0),
    ("a dog ran in the", ["mat", "park", "apple", "home"], 1),
    ("he ate the red", ["home", "mat", "apple", "park"], 2),
    ("she went home and", ["slept", "sat", "ran", "ate"], 0),
    ("the red apple", ["sat", "slept", "ran", "ate"], 3),
]


def test_text_path_is_the_smoltolk_text_logits():
    model, processor = tiny_eval_model()
    ids = torch.tensor([processor(text="the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        joint = model(ids).logits[..., : model.config.vocab_size]
        text = text_causal_lm(model)(ids).logits
    torch.testing.assert_close(text, joint, atol=1e-5, rtol=0)
    assert text_causal_lm(model).model.layers[0] is model.model.layers[0]  # shared, not copied


def test_lm_eval_local_multiple_choice_task_matches_our_scores(tmp_path):
    pytest.importorskip("lm_eval")
    from smoltolk_hf.evaluation.mmlu import run_lm_eval

    data = tmp_path / "local_mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    (tmp_path / "local_mc.yaml").write_text(
        "task: smoltolk_local_mc\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: answer\n"
        "target_delimiter: ' '\n"
        "metric_list:\n  - metric: acc\n"
    )
    model, processor = tiny_eval_model()
    results = run_lm_eval(
        model,
        processor.tokenizer,
        ["smoltolk_local_mc"],
        include_path=tmp_path,
        device="cpu",
    )
    # The same choice by hand: the summed log-probability of " choice" after the question on the text path.
    correct = []
    for question, choices, answer in QUESTIONS:
        context = processor.tokenizer(question)["input_ids"]
        sequences = [context + processor.tokenizer(" " + c)["input_ids"] for c in choices]
        log_probs = token_log_probs(model, sequences, pad_token_id=processor.pad_token_id)
        totals = [float(lp[len(context) - 1 :].sum()) for lp in log_probs]
        correct.append(int(np.argmax(totals)) == answer)
    assert results["smoltolk_local_mc"]["acc"] == pytest.approx(np.mean(correct))
