"""MMLU: lm-evaluation-harness on SmolTolk's text path, SmolLM's cloze task on a local copy checked against
hand-computed log-likelihoods, the macro and weighted averages, the offline error, and the model card's label."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_eval_model

from smoltolk_hf.evaluation.mmlu import MMLU_SUBJECTS, text_causal_lm
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
    assert results.metrics["smoltolk_local_mc"]["acc"] == pytest.approx(np.mean(correct))


# A local copy of MMLU in the Hub repository's layout (<subject>/test-*.parquet), three subjects of 3, 4 and 2
# questions; answers of different lengths so that acc and acc_norm can disagree.
LOCAL_MMLU = {
    "anatomy": [
        ("Where does the cat sit?", ["on the mat", "in the big green park", "apple", "at home"], 0),
        ("What did the dog do?", ["ran", "sat on the mat all day long", "ate", "slept"], 0),
        ("Which one is red?", ["the apple", "the cat", "the dog that ran in the park", "home"], 0),
    ],
    "astronomy": [
        ("What is far away?", ["home", "the park", "a mat", "the red apple"], 3),
        ("Who went home?", ["she", "the cat and the dog", "he", "nobody at all"], 1),
        ("What sat on the mat?", ["the cat", "a dog", "an apple", "the park"], 0),
        ("Where did he eat?", ["at home", "in the park", "on the mat", "there"], 2),
    ],
    "high_school_us_history": [
        ("Who ate the red apple?", ["he", "she", "the cat", "the dog"], 0),
        ("When did she go home?", ["later", "then", "after the park", "never"], 2),
    ],
}


def write_local_mmlu(root):
    from datasets import Dataset

    for subject, rows in LOCAL_MMLU.items():
        (root / subject).mkdir(parents=True)
        Dataset.from_dict(
            {
                "question": [q for q, _, _ in rows],
                "subject": [subject] * len(rows),
                "choices": [c for _, c, _ in rows],
                "answer": [a for _, _, a in rows],
            }
        ).to_parquet(str(root / subject / "test-00000-of-00001.parquet"))
    return root


def hand_log_likelihoods(model, tokenizer, subject, question, choices):
    """log p(" " + choice | SmolLM's cloze prompt) from SmolTolk's joint logits, continuation tokens split off the
    whole string's tokens as lm-eval (and lighteval) do."""
    prompt = f"The following are questions about {subject.replace('_', ' ')}.\nQuestion: {question}\nAnswer:"
    context = tokenizer(prompt)["input_ids"]
    sequences = [tokenizer(f"{prompt} {choice}")["input_ids"] for choice in choices]
    assert all(seq[: len(context)] == context for seq in sequences)
    log_probs = token_log_probs(model, sequences)
    return prompt, [float(lp[len(context) - 1 :].double().sum()) for lp in log_probs]


def test_smollm_cloze_task_scores_the_smollm_prompt(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from smoltolk_hf.evaluation.mmlu import write_smollm_mmlu_tasks

    model, processor = tiny_eval_model()
    group = write_smollm_mmlu_tasks(tmp_path / "tasks", data=write_local_mmlu(tmp_path / "mmlu"))
    output = lm_eval.simple_evaluate(
        model=HFLM(pretrained=text_causal_lm(model), tokenizer=processor.tokenizer, batch_size=4, device="cpu"),
        tasks=[group],
        num_fewshot=0,
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        log_samples=True,
    )
    for subject, rows in LOCAL_MMLU.items():
        samples = sorted(output["samples"][f"smollm_mmlu_cloze_{subject}"], key=lambda s: s["doc_id"])
        assert len(samples) == len(rows)
        for sample, (question, choices, _) in zip(samples, rows):
            prompt, expected = hand_log_likelihoods(model, processor.tokenizer, subject, question, choices)
            assert [arg for arg in sample["arguments"]] == [(prompt, f" {c}") for c in choices]
            np.testing.assert_allclose([ll for ll, _ in sample["filtered_resps"]], expected, atol=1e-4)


def test_smollm_mmlu_on_a_local_copy_per_subject_macro_and_weighted(tmp_path):
    pytest.importorskip("lm_eval")
    from smoltolk_hf.evaluation.mmlu import run_lm_eval

    model, processor = tiny_eval_model()
    run = run_lm_eval(model, processor.tokenizer, data=write_local_mmlu(tmp_path / "mmlu"), device="cpu")
    per_subject = {}
    for subject, rows in LOCAL_MMLU.items():
        acc, acc_norm = [], []
        for question, choices, answer in rows:
            _, lls = hand_log_likelihoods(model, processor.tokenizer, subject, question, choices)
            acc.append(int(np.argmax(lls)) == answer)
            acc_norm.append(int(np.argmax(np.array(lls) / [len(c) for c in choices])) == answer)
        per_subject[subject] = {"acc": np.mean(acc), "acc_norm": np.mean(acc_norm)}
        task = f"smollm_mmlu_cloze_{subject}"
        assert run.metrics[task]["acc"] == pytest.approx(per_subject[subject]["acc"])
        assert run.metrics[task]["acc_norm"] == pytest.approx(per_subject[subject]["acc_norm"])
    sizes = [len(rows) for rows in LOCAL_MMLU.values()]
    for metric in ("acc", "acc_norm"):  # acc_norm on the group row too
        summary = run.summary("smollm_mmlu_cloze", metric)
        values = [per_subject[s][metric] for s in LOCAL_MMLU]
        assert summary["macro"] == pytest.approx(np.mean(values))
        assert summary["weighted"] == pytest.approx(np.average(values, weights=sizes))
        assert summary["weighted"] == pytest.approx(run.metrics["smollm_mmlu_cloze"][metric])  # lm-eval's own
    assert summary["subjects"] == sorted(LOCAL_MMLU) and summary["num_questions"] == 9
    assert summary["dataset"] == f"local files under {tmp_path / 'mmlu'}" and not summary["full_mmlu"]
    with pytest.raises(KeyError, match="report no 'f1'"):
        run.summary("smollm_mmlu_cloze", "f1")


def test_mmlu_refuses_bad_subjects_and_missing_data(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    import datasets
    import huggingface_hub.constants

    from smoltolk_hf.evaluation.mmlu import run_lm_eval, write_smollm_mmlu_tasks

    with pytest.raises(ValueError, match="unknown MMLU subjects"):
        write_smollm_mmlu_tasks(tmp_path, subjects=["astrology"])
    with pytest.raises(ValueError, match="has no \\['virology'\\] test data"):
        write_smollm_mmlu_tasks(tmp_path, data=write_local_mmlu(tmp_path / "mmlu"), subjects=["anatomy", "virology"])
    # No network, an empty cache: one clear error naming what to do (not lm-eval's traceback after retries).
    for module in (datasets.config, huggingface_hub.constants):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    model, processor = tiny_eval_model()
    with pytest.raises(ConnectionError, match="not available: no network and no cached copy") as error:
        run_lm_eval(model, processor.tokenizer, subjects=["anatomy"], device="cpu")
    assert "\n" not in str(error.value) and "--mmlu-data" in str(error.value)


def test_smoltolk_eval_mmlu_on_a_local_copy_and_the_card_label(tmp_path):
    pytest.importorskip("lm_eval")
    from smoltolk_hf.evaluation.cli import cli_eval
    from smoltolk_hf.hub import eval_results, model_card

    model, processor = tiny_eval_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    mmlu = write_local_mmlu(tmp_path / "mmlu")
    argv = [str(tmp_path / "model"), "--out", str(tmp_path / "eval"), "--device", "cpu", "--batch-size", "4"]
    assert cli_eval([*argv, "--mmlu", "--mmlu-data", str(mmlu), "--mmlu-average", "macro"]) == 0
    (result,) = json.loads((tmp_path / "eval" / "results.json").read_text())
    post = result["details"]["mmlu"]["post"]
    assert result["mmlu"] == {"post": pytest.approx(post["macro"])}
    assert post["metric"] == "acc_norm" and set(post["per_task"]) == {f"smollm_mmlu_cloze_{s}" for s in LOCAL_MMLU}
    record = result["mmlu_task"]
    assert record["task"] == "smollm_mmlu_cloze" and record["subjects"] == sorted(LOCAL_MMLU)
    assert (record["average"], record["full_mmlu"], record["dataset"]) == ("macro", False, f"local files under {mmlu}")
    assert "MMLU: task `smollm_mmlu_cloze`, acc_norm (macro average), 0-shot, local files under" in (
        (tmp_path / "eval" / "results.md").read_text()
    )

    # The card names the task and the three subjects, never cais/mmlu.
    card = model_card(model, "tiny", results=tmp_path / "eval" / "results.json")
    (entry,) = card.data.eval_results
    assert entry.dataset_type == "smollm_mmlu_cloze" and entry.metric_value == round(100 * post["macro"], 2)
    assert (
        entry.dataset_name == "MMLU (smollm_mmlu_cloze, 3 of 57 subjects (anatomy, astronomy, high_school_us_history))"
    )
    assert entry.dataset_config == "anatomy,astronomy,high_school_us_history"
    assert "cais/mmlu" not in str(card)
    assert (
        "lm-eval task `smollm_mmlu_cloze`, acc_norm (macro average), 0-shot, on a local copy test split" in card.text
    )

    # Only the whole test split of the Hub's cais/mmlu, unlimited, is labelled cais/mmlu.
    full = {**record, "dataset": "cais/mmlu", "subjects": sorted(MMLU_SUBJECTS), "full_mmlu": True}
    (entry,) = eval_results({"mmlu": {"post": 0.3}, "mmlu_task": full})
    assert (entry.dataset_type, entry.dataset_name, entry.dataset_config) == ("cais/mmlu", "MMLU", "all")
    (entry,) = eval_results({"mmlu": {"post": 0.3}})  # no record of the run: no dataset claimed
    assert entry.dataset_type == "MMLU"


def test_summary_of_a_group_whose_aggregate_lacks_the_metric():
    # lm-eval's mmlu_continuation aggregates only acc: acc_norm comes from the subjects (nested groups expanded).
    from smoltolk_hf.evaluation.mmlu import LmEvalRun

    run = LmEvalRun(
        metrics={
            "group": {"acc": 0.5},
            "stem": {"acc": 0.4},
            "a": {"acc": 0.5, "acc_norm": 0.6},
            "b": {"acc": 0.25, "acc_norm": 0.5},
            "c": {"acc": 1.0, "acc_norm": 0.0},
        },
        subtasks={"group": ["stem", "c"], "stem": ["a", "b"]},
        sizes={"a": 10, "b": 4, "c": 6},
    )
    summary = run.summary("group", "acc_norm")
    assert summary["per_task"] == {"a": 0.6, "b": 0.5, "c": 0.0}
    assert summary["weighted"] == pytest.approx((0.6 * 10 + 0.5 * 4) / 20)
    assert summary["macro"] == pytest.approx(1.1 / 3)
    assert summary["num_questions"] == 20 and not summary["full_mmlu"]
