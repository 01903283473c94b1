"""Train -> use as one path: the folder `smoltolk train` writes (and each checkpoint) goes as it is to
`from_pretrained`, `AutoProcessor`, the pipeline, `smoltolk eval` and `smoltolk export`; the export's model card
code runs as written, the first block where `smoltolk_hf` cannot be imported (remote code only)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import yaml
from helpers import DATA_NUM_UNITS, STEPS, tiny_training_config, write_assets
from transformers import AutoProcessor, pipeline

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM, SmolTolkProcessor
from smoltolk_hf.cli import main
from smoltolk_hf.hub import example_units
from smoltolk_hf.pipeline_speech_continuation import check_processor_layout

# Run the card's code with the package hidden, as on a machine where it is not installed.
WITHOUT_PACKAGE = "import sys\nsys.modules['smoltolk_hf'] = None\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("train_to_use")
    assets = write_assets(str(root / "assets"))
    config = tiny_training_config(assets, str(root / "run"), save_strategy="steps", save_steps=STEPS // 2)
    config["model"]["speech_tokenizer"] = assets["speech_tokenizer"]
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(root / "train.yaml")]) == 0
    return str(root / "run")


def test_the_run_and_its_checkpoints_hold_model_and_processor(run_dir):
    for folder in (run_dir, *(os.path.join(run_dir, f"checkpoint-{step}") for step in (STEPS // 2, STEPS))):
        model = SmolTolkForCausalLM.from_pretrained(folder)
        processor = AutoProcessor.from_pretrained(folder)
        assert isinstance(processor, SmolTolkProcessor)
        assert processor.speech_tokenizer is not None and processor.speech_tokenizer.n_units == DATA_NUM_UNITS
        check_processor_layout(processor, model.config)  # raises on any id that disagrees
        assert list(processor(text="w1 w2")) == processor.model_input_names  # what the Trainer reads from it


def test_pipeline_and_eval_take_the_run_folder(run_dir, tmp_path):
    pipe = pipeline("speech-continuation", model=run_dir, device="cpu")
    out = pipe("w1 w2 w3", continuation="speech", do_sample=False, max_new_tokens=4)
    assert out["modality"] == "speech" and len(out["units"]) > 0
    audio = pipe(np.zeros(8000, dtype=np.float32), continuation="text", do_sample=False, max_new_tokens=4)
    assert audio["modality"] == "text"

    units = os.path.join(os.path.dirname(run_dir), "assets", "units")
    assert main(["eval", run_dir, "--out", str(tmp_path / "eval"), "--speech-nll", units, "--batch-size", "4"]) == 0
    (result,) = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["speech_nll"] > 0


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.S)


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_export_keeps_everything_and_its_card_runs_as_written(run_dir, tmp_path):
    export = tmp_path / "smoltolk-tiny"
    assert main(["export", run_dir, str(export)]) == 0
    assert (export / "processor_config.json").is_file() and (export / "speech_tokenizer").is_dir()
    assert (export / "tokenizer.json").is_file() and (export / "processing_smoltolk.py").is_file()

    card = (export / "README.md").read_text()
    remote_code, with_package = python_blocks(card)
    assert 'audio="prompt.wav"' in remote_code
    soundfile.write(tmp_path / "prompt.wav", np.zeros(8000, dtype=np.float32), 16_000)
    # The card names the folder as it names a Hub repository; run it beside the folder.
    result = run_python(WITHOUT_PACKAGE + remote_code, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    result = run_python(with_package + "\nprint(pipe('w1 w2', continuation='speech', max_new_tokens=4))", tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]


def test_card_unit_examples_fit_the_model():
    assert example_units(SmolTolkConfig(num_speech_units=500)) == [12, 7, 431, 98]
    assert all(0 <= u < 40 for u in example_units(SmolTolkConfig(num_speech_units=40)))


def test_export_of_a_folder_with_a_text_tokenizer_only_keeps_it(run_dir, tmp_path):
    """Runs saved before the processor was (model + text tokenizer): the export builds the processor from them, and
    the card's unit-id example is valid for the model and runs."""
    old_run = tmp_path / "old-run"
    SmolTolkForCausalLM.from_pretrained(run_dir).save_pretrained(old_run)
    AutoProcessor.from_pretrained(run_dir).tokenizer.save_pretrained(old_run)
    export = tmp_path / "exported"
    assert main(["export", str(old_run), str(export)]) == 0
    processor = AutoProcessor.from_pretrained(export)
    assert processor.speech_tokenizer is None
    assert processor.tokenizer.get_vocab() == AutoProcessor.from_pretrained(run_dir).tokenizer.get_vocab()
    remote_code = python_blocks((export / "README.md").read_text())[0]
    assert f"units={example_units(processor)}" in remote_code
    result = run_python(WITHOUT_PACKAGE + remote_code, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
