"""Publishing: the exported folder loads as remote code (model and processor) with identical logits and greedy
generations, the model card carries its metadata, results convert to model-index, push_to_hub uploads the folder
(mocked: nothing leaves the machine), and the publish example runs."""

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_logits, tiny_model_and_processor, waveform
from huggingface_hub import HfApi, ModelCard

from smoltolk_hf.hub import CITATION, cli_export, eval_results, export_for_hub, load_results, push_to_hub

# One entry of `smoltolk eval`'s results.json (accuracies as fractions, extra entries ignored).
RESULTS = {
    "model": "tiny",
    "blimp": {"T": 0.794, "S": 0.58},
    "tstorycloze": {"T": 0.884, "S": 0.82, "T->S": 0.752, "S->T": 0.81},
    "sstorycloze": {"S": 0.55, "T->S": None},
    "mmlu": {"post": 0.3, "pre": 0.302},
    "speech_nll": 3.1,
    "segmentation": {"f1": 0.4},
}
CARD = dict(base_model="HuggingFaceTB/SmolLM2-135M", datasets=["openslr/librispeech_asr"])


@pytest.fixture(scope="module")
def model_and_processor():
    return tiny_model_and_processor(seed=1)


@pytest.fixture(scope="module")
def exported(model_and_processor, tmp_path_factory):
    """`smoltolk export` of a saved model + processor folder."""
    model, processor = model_and_processor
    saved, out = tmp_path_factory.mktemp("saved"), tmp_path_factory.mktemp("hub") / "smoltolk-tiny"
    model.save_pretrained(saved)
    processor.save_pretrained(saved)
    results = saved / "results.json"
    results.write_text(json.dumps([RESULTS]))
    argv = [str(saved), str(out), "--results", str(results), "--base-model", CARD["base_model"]]
    assert cli_export(argv + ["--dataset", CARD["datasets"][0], "--repo-id", "me/smoltolk-tiny"]) == 0
    return out


def test_folder_contents(exported):
    files = set(os.listdir(exported))
    assert {"model.safetensors", "config.json", "modeling_smoltolk.py", "configuration_smoltolk.py"} <= files
    assert {"processor_config.json", "processing_smoltolk.py", "tokenization_speech.py", "tokenizer.json"} <= files
    assert "README.md" in files and (exported / "speech_tokenizer").is_dir()
    assert json.loads((exported / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_smoltolk.SmolTolkProcessor"
    }
    assert set(json.loads((exported / "config.json").read_text())["auto_map"]) == {
        "AutoConfig", "AutoModel", "AutoModelForCausalLM"
    }  # fmt: skip


def test_loads_as_remote_code_where_the_package_is_absent(exported, model_and_processor, tmp_path):
    """A fresh process that cannot import smoltolk_hf gets the same ids, logits and greedy tokens."""
    model, processor = model_and_processor
    np.save(tmp_path / "wave.npy", waveform(0.4, seed=5))
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["smoltolk_hf"] = None  # importing the package now fails
        import numpy as np, torch
        from transformers import AutoModelForCausalLM, AutoProcessor
        model = AutoModelForCausalLM.from_pretrained({str(exported)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(exported)!r}, trust_remote_code=True)
        for obj in (model, processor):
            assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        wave = np.load({str(tmp_path / "wave.npy")!r})
        ids = processor(segments=[("text", "hello world"), ("speech", wave)], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits
        generated = model.generate(ids, do_sample=False, max_new_tokens=10)
        torch.save({{"ids": ids, "logits": logits, "generated": generated}}, {str(tmp_path / "out.pt")!r})
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")

    ids = processor(segments=[("text", "hello world"), ("speech", waveform(0.4, seed=5))], return_tensors="pt")
    assert torch.equal(remote["ids"], ids["input_ids"])
    with torch.no_grad():
        assert_same_logits(model(ids["input_ids"]).logits, remote["logits"])
    generated = model.generate(ids["input_ids"], do_sample=False, max_new_tokens=10)
    assert generated.shape[1] > ids["input_ids"].shape[1] + 1 and torch.equal(generated, remote["generated"])


def test_model_card_metadata(exported):
    card = ModelCard.load(exported / "README.md")
    data = card.data
    assert data.model_name == "smoltolk-tiny" and data.base_model == CARD["base_model"]
    assert data.datasets == CARD["datasets"] and data.library_name == "transformers" and data.license == "apache-2.0"
    assert "custom_code" in data.tags
    by_name = {(r.dataset_name, r.dataset_config): r.metric_value for r in data.eval_results}
    assert by_name == {
        ("BLIMP", "T"): 79.4, ("BLIMP", "S"): 58.0,
        ("tStoryCloze", "T"): 88.4, ("tStoryCloze", "S"): 82.0,
        ("tStoryCloze", "T->S"): 75.2, ("tStoryCloze", "S->T"): 81.0,
        ("sStoryCloze", "S"): 55.0, ("MMLU", "post"): 30.0,
    }  # fmt: skip
    assert all(r.metric_type == "accuracy" for r in data.eval_results)
    assert "| 79.4 | 58.0 | 88.4 | 82.0 | 75.2 | 81.0 | 55.0 | 30.0 / 30.2 |" in card.text
    assert 'from_pretrained("me/smoltolk-tiny", trust_remote_code=True)' in card.text
    assert CITATION in card.text


def test_results_formats(tmp_path):
    expected = load_results(RESULTS)
    assert list(expected) == ["blimp", "tstorycloze", "sstorycloze", "mmlu"]  # paper Table 1 order
    assert "T->S" not in expected["sstorycloze"]  # None: not evaluated
    path = tmp_path / "results.json"
    path.write_text(json.dumps([RESULTS, {**RESULTS, "model": "other"}]))
    assert load_results(path, model_name="tiny") == expected
    with pytest.raises(ValueError, match="pass model_name="):
        load_results(path)
    assert load_results({"sBLIMP": {"S": 0.6}, "MyTask": {"T→S": 0.5}}) == {
        "blimp": {"S": 0.6},
        "MyTask": {"T->S": 0.5},
    }
    assert [(r.dataset_name, r.metric_value) for r in eval_results({"mmlu": {"pre": 0.3, "post": 0.31}})] == [
        ("MMLU", 31.0)
    ]  # "pre" is the backbone's score, not this model's
    for bad in ({"blimp": {"S": 58.0}}, {"blimp": {"S": "high"}}, {"blimp": 0.5}):
        with pytest.raises(ValueError):
            load_results(bad)


def test_push_to_hub_uploads_the_folder(model_and_processor, monkeypatch):
    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        uploaded["created"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded.update(repo_id=repo_id, files=sorted(os.listdir(folder_path)), kwargs=kwargs)
        uploaded["card"] = ModelCard.load(Path(folder_path) / "README.md")
        return "commit"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model, processor = model_and_processor
    assert push_to_hub("me/tiny", model, processor, private=True, results=RESULTS, **CARD) == "commit"
    assert uploaded["created"] == ("me/tiny", {"private": True, "exist_ok": True})
    assert uploaded["repo_id"] == "me/tiny"
    assert {"model.safetensors", "modeling_smoltolk.py", "processing_smoltolk.py", "README.md"} <= set(
        uploaded["files"]
    )
    assert uploaded["card"].data.model_name == "tiny" and len(uploaded["card"].data.eval_results) == 8


def test_export_refuses_a_processor_of_another_model(model_and_processor, tmp_path):
    model, _ = model_and_processor
    other = tiny_model_and_processor()[1]
    other.num_speech_units = 7
    with pytest.raises(ValueError, match="does not match the model's"):
        export_for_hub(model, tmp_path, other)


def test_publish_example_runs(tmp_path, monkeypatch, capsys):
    examples = Path(__file__).parents[1] / "examples"
    monkeypatch.syspath_prepend(str(examples))  # publish.py imports its checkpoint builder from quickstart.py
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    publish = runpy.run_path(str(examples / "publish.py"), run_name="publish")
    folder = publish["main"]([str(tmp_path / "out"), "--tiny", "--results", str(tmp_path / "results.json")])
    assert ModelCard.load(Path(folder) / "README.md").data.eval_results
    assert "remote-code logits equal the original model's" in capsys.readouterr().out
