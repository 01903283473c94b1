"""Bad inputs to the `smoltolk` commands and the error each must give: one `error: ...` line on stderr, exit status
2, no traceback, and nothing of the user's overwritten or deleted without an explicit flag.

Each row of a table is (case id, arguments, fragments the message must contain); add rows as new bad inputs are
found.
"""

from __future__ import annotations

import os
import pickle

import pytest
import yaml
from helpers import DATA_NUM_UNITS, tiny_model_and_processor, tiny_training_config, write_assets

from smoltolk_hf.cli import main
from smoltolk_hf.training import build_trainer, load_config
from smoltolk_hf.training.config import parse_assignment, parse_overrides


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of `smoltolk ARGV`."""
    capsys.readouterr()
    status = main(argv)
    return status, capsys.readouterr().err


def assert_user_error(status: int, err: str, fragments: list[str]) -> None:
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[-1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    return write_assets(str(tmp_path_factory.mktemp("assets")))


def write_config(config: dict, path) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def finished_run(assets, tmp_path_factory) -> tuple[str, str]:
    """A finished tiny run (2 steps, a checkpoint at step 1) and its YAML."""
    root = tmp_path_factory.mktemp("finished")
    config = tiny_training_config(assets, str(root / "run"), max_steps=2, save_strategy="steps", save_steps=1)
    config["stages"] = {"stage1_steps": 1, "warmup_steps": 1}
    path = write_config(config, root / "train.yaml")
    assert main(["train", path]) == 0
    return str(root / "run"), path


def snapshot(folder: str) -> dict[str, float]:
    """Every file under `folder` with its modification time."""
    return {
        os.path.join(root, name): os.path.getmtime(os.path.join(root, name))
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_train_refuses_the_folder_of_a_finished_run(finished_run, capsys):
    run_dir, config = finished_run
    before = snapshot(run_dir)
    status, err = run_cli(["train", config], capsys)
    assert_user_error(status, err, [run_dir, "already holds a training run", "checkpoint-1", "--resume", "--overwrite"])
    assert snapshot(run_dir) == before


def test_train_refuses_resume_with_overwrite(finished_run, capsys):
    status, err = run_cli(["train", finished_run[1], "--resume", "--overwrite"], capsys)
    assert_user_error(status, err, ["--resume", "--overwrite", "one of them"])


def test_train_overwrite_replaces_the_run_and_its_checkpoints(assets, tmp_path, capsys):
    config = tiny_training_config(assets, str(tmp_path / "run"), max_steps=1)
    config["stages"] = {"stage1_steps": 1, "warmup_steps": 1}
    path = write_config(config, tmp_path / "train.yaml")
    os.makedirs(tmp_path / "run" / "checkpoint-7")  # an older run's checkpoint, which --resume would pick up
    (tmp_path / "run" / "config.json").write_text("{}")
    assert main(["train", path]) == 2
    assert main(["train", path, "--overwrite"]) == 0
    assert not (tmp_path / "run" / "checkpoint-7").exists()
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("model"))
    model, processor = tiny_model_and_processor()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_export_refuses_a_non_empty_folder(model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    status, err = run_cli(["export", model_dir, str(out)], capsys)
    assert_user_error(status, err, [str(out), "not empty", "README.md", "--overwrite"])
    assert (out / "README.md").read_text() == "my notes"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind


def test_export_overwrite_keeps_nothing_of_the_old_folder(model_dir, tmp_path):
    """An older speech_tokenizer/ left in the folder must not be reloaded with the new model."""
    out = tmp_path / "out"
    (out / "speech_tokenizer").mkdir(parents=True)
    (out / "speech_tokenizer" / "stale.json").write_text("{}")
    (out / "notes.txt").write_text("old")
    assert main(["export", model_dir, str(out), "--overwrite"]) == 0
    assert not (out / "notes.txt").exists()
    assert not (out / "speech_tokenizer" / "stale.json").exists()
    assert (out / "config.json").is_file() and (out / "README.md").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_export_into_a_new_folder(model_dir, tmp_path):
    assert main(["export", model_dir, str(tmp_path / "new" / "out")]) == 0
    assert (tmp_path / "new" / "out" / "model.safetensors").is_file()


def written(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


CASES = [
    ("export of a missing model folder", lambda t: ["export", str(t / "missing"), str(t / "out")], ["missing"]),
    ("export of an unknown Hub id", lambda t: ["export", "nobody/no-such-model", str(t / "out")], ["no-such-model"]),
    (
        "convert-authors: a missing file",
        lambda t: ["convert-authors", str(t / "missing.pt"), str(t / "out")],
        ["No checkpoint file", "missing.pt"],
    ),
    (
        "convert-authors: not a torch file",
        lambda t: ["convert-authors", written(t / "junk.pt", b"hello world"), str(t / "out")],
        ["junk.pt", "not a file written by torch.save"],
    ),
    (
        "convert-authors: a plain pickle",
        lambda t: ["convert-authors", written(t / "plain.pt", pickle.dumps({"model": {}})), str(t / "out")],
        ["plain.pt", "never unpickles"],
    ),
]


@pytest.mark.parametrize("argv, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_commands_refuse(argv, fragments, tmp_path, capsys):
    status, err = run_cli(argv(tmp_path), capsys)
    assert_user_error(status, err, fragments)


def set_in(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        config = config[int(part)] if isinstance(config, list) else config.setdefault(part, {})
    config[last] = value


# (case id, {dotted key: value} set in the tiny YAML, extra arguments, fragments of the error line)
TRAIN_CASES = [
    (
        "misspelt model override",
        {"model.overrides": {"num_hidden_layer": 2}},
        [],
        ["model", "overrides.num_hidden_layer", "did you mean 'num_hidden_layers'"],
    ),
    ("misspelt data entry key", {"data.text.0.wieght": 0.5}, [], ["data.text.0.wieght", "did you mean 'weight'"]),
    ("unknown data key", {"data.contxt_length": 64}, [], ["data.contxt_length", "did you mean 'context_length'"]),
    ("unknown section", {"trainig": {}}, [], ["trainig", "did you mean 'training'"]),
    ("misspelt Trainer option", {"training.learning_rat": 0.1}, [], ["training.learning_rat", "'learning_rate'"]),
    ("quoted int", {"model.num_speech_units": "20"}, [], ["model.num_speech_units", "int", "'20'"]),
    ("quoted bool override", {"model.overrides": {"use_layer_pooling": "false"}}, [], ["use_layer_pooling", "bool"]),
    ("data entry without path", {"data.speech": [{"name": "x"}]}, [], ["data.speech.0 needs path"]),
    (
        "preset ignored by from_pretrained",
        {"model": {"from_pretrained": "run", "preset": "smoltolk-150m"}},
        [],
        ["preset='smoltolk-150m' would be ignored", "overrides"],
    ),
    ("two sources", {"model.from_pretrained": "run"}, [], ["exactly one of"]),
    (
        "misspelt field on the command line",
        {},
        ["--training.learnin_rate", "1e-4"],
        ["training.learnin_rate", "did you mean 'learning_rate'"],
    ),
    ("argument without a section", {}, ["--lr", "1e-4"], ["'--lr'", "--SECTION.FIELD VALUE"]),
    ("override without a value", {}, ["--training.seed"], ["--training.seed needs a value"]),
    ("list index out of range", {}, ["--data.text.5.weight", "1"], ["--data.text.5", "0 to 0"]),
]


@pytest.mark.parametrize("edits, extra, fragments", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_refuses(assets, tmp_path, capsys, edits, extra, fragments):
    config = tiny_training_config(assets, str(tmp_path / "run"), max_steps=1)
    for key, value in edits.items():
        set_in(config, key, value)
    status, err = run_cli(["train", write_config(config, tmp_path / "train.yaml"), *extra], capsys)
    assert_user_error(status, err, fragments)
    assert not (tmp_path / "run").exists()


def test_train_refuses_invalid_yaml(tmp_path, capsys):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  from_text_model: [unclosed\ndata: {}\n")
    status, err = run_cli(["train", str(path)], capsys)
    assert_user_error(status, err, [str(path), "not valid YAML", "line"])


def test_command_line_overrides_set_any_field(assets, tmp_path):
    config = tiny_training_config(assets, str(tmp_path / "run"))
    overrides = parse_overrides(
        ["--training.learning_rate", "1e-4", f"--training.output_dir={tmp_path / 'other'}", "--data.text.0.weight", "2"]
    )
    loaded = load_config(config, overrides)
    assert loaded.training["learning_rate"] == 1e-4 and loaded.training["output_dir"] == str(tmp_path / "other")
    assert loaded.data.text[0].weight == 2.0
    assert build_trainer(config, overrides).args.learning_rate == 1e-4


def test_key_value_assignments_read_values_as_the_config_does():
    assert parse_assignment("learning_rate=1e-4") == ("learning_rate", 1e-4)
    assert parse_assignment("use_layer_pooling=False") == ("use_layer_pooling", False)
    assert parse_assignment("num_output_adapter_layers=0") == ("num_output_adapter_layers", 0)
    assert parse_assignment("pooling_norm=none") == ("pooling_norm", "none")
    for bad in ("pooling_norm", "=3"):
        with pytest.raises(ValueError, match="is not KEY=VALUE"):
            parse_assignment(bad)


def test_yaml_floats_without_a_dot_are_floats(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: {preset: smoltolk-150m, tokenizer: x}\ndata: {}\ntraining: {learning_rate: 3e-4}\n")
    assert load_config(str(path)).training["learning_rate"] == 3e-4


def test_tiny_run_has_the_configured_units(finished_run):
    from smoltolk_hf import SmolTolkForCausalLM

    assert SmolTolkForCausalLM.from_pretrained(finished_run[0]).config.num_speech_units == DATA_NUM_UNITS
