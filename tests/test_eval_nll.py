"""Speech NLL: per utterance (the default) and on packed windows (the training loss of paper Figure 2)."""

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from helpers import EVAL_NUM_UNITS, make_speech_data, tiny_eval_model

from smoltolk_hf.data.samples import SpeechSampleBuilder, labels_from_ids
from smoltolk_hf.evaluation import speech_nll
from smoltolk_hf.evaluation.scoring import token_log_probs

UTTERANCES = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]


@pytest.mark.parametrize("protocol", ["authors", "package"])
def test_utterance_nll_is_the_mean_unit_log_prob_and_windows(protocol):
    """Each utterance alone, opened by the speech end token (authors' nll_eval.py) or by <|speech|> (package)."""
    model, processor = tiny_eval_model()
    utterances = UTTERANCES[:2]
    result = speech_nll(model, processor, utterances, protocol=protocol)
    opening = processor.speech_eos_id if protocol == "authors" else processor.speech_marker_id
    sequences = [[opening] + [processor.speech_token_offset + u for u in units] for units in utterances]
    log_probs = token_log_probs(model, sequences)
    assert result["nll"] == pytest.approx(-float(np.mean(np.concatenate([lp.numpy() for lp in log_probs]))), abs=1e-5)
    assert result["num_targets"] == 7 and result["num_utterances"] == 2
    assert (result["mode"], result["include_eos"], result["protocol"]) == ("utterance", False, protocol)
    windowed = speech_nll(model, processor, utterances, max_length=3, protocol=protocol)  # opening + 2 units
    assert windowed["num_targets"] == 7 and windowed["max_length"] == 3
    assert speech_nll(model, processor, utterances, include_eos=True, protocol=protocol)["num_targets"] == 9
    other = speech_nll(model, processor, utterances, protocol="package" if protocol == "authors" else "authors")
    assert other["nll"] != pytest.approx(result["nll"], abs=1e-4)  # the opening token matters


class _StartAtZero:
    """A generator stand-in that draws position 0: the builder's sample then starts at the first utterance."""

    def integers(self, high):
        return 0


def test_packed_nll_is_the_training_loss_on_consecutive_windows():
    model, processor = tiny_eval_model()
    cfg = model.config
    result = speech_nll(model, processor, UTTERANCES, batch_size=2, max_length=5, mode="packed")

    # By hand: the stream u u u u u E u u E u u u E (13 ids) in windows of <|speech|> + 4 ids: 4 + 4 + 4 + 1.
    stream = []
    for utterance in UTTERANCES:
        stream += [cfg.speech_token_offset + u for u in utterance] + [cfg.speech_eos_id]
    windows = [[cfg.speech_marker_id] + stream[i : i + 4] for i in range(0, len(stream), 4)]
    log_probs = torch.cat(token_log_probs(model, windows, batch_size=1))  # every target is speech (units and E)
    assert result["nll"] == pytest.approx(-float(log_probs.double().mean()), abs=1e-5)
    assert (result["num_targets"], result["num_windows"], result["num_utterances"]) == (13, 4, 3)
    assert (result["mode"], result["include_eos"], result["max_length"]) == ("packed", True, 5)

    # The first window is the training sample SpeechSampleBuilder packs from the first utterance, and the NLL of a
    # window (end token included) is the speech loss the model trains on.
    dataset = Dataset.from_dict({"units": UTTERANCES})
    sample = SpeechSampleBuilder(dataset, cfg, context_length=5).build(_StartAtZero())
    assert sample["input_ids"].tolist() == windows[0]
    with torch.no_grad():
        loss = model(input_ids=sample["input_ids"][None], labels=sample["labels"][None]).speech_loss
    alone = -float(token_log_probs(model, [windows[0]])[0].double().sum())
    assert float(loss) == pytest.approx(alone / 4, abs=1e-5)
    torch.testing.assert_close(labels_from_ids(sample["input_ids"], cfg)[1:], sample["input_ids"][1:])  # E scored


def test_nll_refuses_bad_options():
    model, processor = tiny_eval_model()
    with pytest.raises(ValueError, match="mode must be one of"):
        speech_nll(model, processor, UTTERANCES, mode="windows")
    with pytest.raises(ValueError, match="protocol must be one of"):
        speech_nll(model, processor, UTTERANCES, protocol="paper")
    with pytest.raises(ValueError, match="scores the end tokens"):
        speech_nll(model, processor, UTTERANCES, mode="packed", include_eos=False)
    with pytest.raises(ValueError, match="no utterances"):
        speech_nll(model, processor, [], mode="packed")


def test_smoltolk_eval_nll_and_segmentation_options_are_recorded(tmp_path):
    from smoltolk_hf.evaluation.cli import cli_eval
    from smoltolk_hf.evaluation.segmentation import evaluate_segmentation

    model, processor = tiny_eval_model()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = make_speech_data(4)[0].map(lambda row: {"units": [u % EVAL_NUM_UNITS for u in row["units"]]})
    data.save_to_disk(tmp_path / "units")
    argv = [str(tmp_path / "model"), "--out", str(tmp_path / "out"), "--device", "cpu", "--name", "tiny"]
    argv += ["--speech-nll", str(tmp_path / "units"), "--nll-mode", "packed", "--nll-max-length", "16"]
    argv += ["--segmentation", str(tmp_path / "units"), "--segmentation-r-value", "kreuk", "--segmentation-rescale"]
    assert cli_eval([*argv, "--segmentation-tolerance", "2"]) == 0
    (result,) = json.loads((tmp_path / "out" / "results.json").read_text())
    expected = speech_nll(model, processor, data["units"], max_length=16, mode="packed")
    assert result["speech_nll"] == pytest.approx(expected["nll"], abs=1e-5)
    assert result["details"]["speech_nll"]["mode"] == "packed" and result["details"]["speech_nll"]["max_length"] == 16
    segmentation = evaluate_segmentation(model, processor, data, tolerance=2, r_value="kreuk", rescale=True)
    assert result["segmentation"]["r_value"] == pytest.approx(segmentation["r_value"])
    assert (result["segmentation"]["tolerance"], result["segmentation"]["r_value_definition"]) == (2, "kreuk")
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert (
        f"tiny, speech NLL: packed mode, windows of 16 ids, end tokens scored, {expected['num_targets']}" in markdown
    )
    assert (
        "tiny, segmentation: R-value with kreuk over-segmentation, tolerance 2 token(s), peaks on per-utterance"
        in markdown
    )
