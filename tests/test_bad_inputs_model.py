"""Bad inputs to the model entry points (config, from_text_model, from_pretrained, forward) and the error each must
give.

Each row of a table is (case id, what to call, fragments the message must contain); add rows as new bad inputs
are found. Every error is a `ValueError` whose message names the bad value and where it came from.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import NUM_UNITS, tiny_text_model

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM

CONFIG_CASES = [
    ("misspelt field", dict(num_speech_unit=20), ["'num_speech_unit'", "did you mean 'num_speech_units'"]),
    ("misspelt switch", dict(use_layer_pool=False), ["'use_layer_pool'", "did you mean 'use_layer_pooling'"]),
    ("bool as string", dict(use_layer_pooling="false"), ["use_layer_pooling", "bool", "'false'", "without quotes"]),
    ("int as string", dict(num_speech_units="20"), ["num_speech_units", "int", "'20'"]),
    ("int as bool", dict(num_input_adapter_layers=True), ["num_input_adapter_layers", "int", "True"]),
    ("int as float", dict(num_output_adapter_layers=2.0), ["num_output_adapter_layers", "int", "2.0"]),
    ("float as string", dict(entropy_beta="0.01"), ["entropy_beta", "float", "'0.01'"]),
    ("computed property", dict(speech_eos_id=5), ["speech_eos_id", "computed"]),
    ("no units", dict(num_speech_units=0), ["num_speech_units", ">= 1", "0"]),
]


@pytest.mark.parametrize("kwargs, fragments", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_refuses(kwargs, fragments):
    with pytest.raises(ValueError) as caught:
        SmolTolkConfig(**kwargs)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_config_accepts_an_integer_entropy_beta_as_that_float():
    assert SmolTolkConfig(entropy_beta=0).entropy_beta == 0.0


def test_from_text_model_refuses_a_misspelt_override():
    with pytest.raises(ValueError, match="'num_input_adapter_layer' \\(did you mean 'num_input_adapter_layers'\\?\\)"):
        SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS, num_input_adapter_layer=0)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("saved"))
    SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS).save_pretrained(folder)
    return folder


def test_saved_config_json_round_trips(saved_folder):
    """Everything transformers writes into config.json (auto_map, architectures, dtype, transformers_version, ...)
    loads; this is what the strict checks must never refuse."""
    model = SmolTolkForCausalLM.from_pretrained(saved_folder)
    assert model.config.num_speech_units == NUM_UNITS


def linked_copy_without_config(folder: str, target: str) -> str:
    """A copy of `folder` (links to its files) without config.json."""
    os.makedirs(target)
    for name in os.listdir(folder):
        if name != "config.json":
            os.symlink(os.path.join(folder, name), os.path.join(target, name))
    return target


def with_config_edit(folder: str, target: str, **edits) -> str:
    """A copy of `folder` (links to its weights) whose config.json has `edits` applied."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config.update(edits)
    with open(os.path.join(linked_copy_without_config(folder, target), "config.json"), "w") as f:
        json.dump(config, f)
    return target


LOAD_CASES = [
    ("unknown key in config.json", {"config": {"num_speech_unit": 5}}, ["'num_speech_unit'", "config.json"]),
    ("quoted bool in config.json", {"config": {"use_speech_residual": "true"}}, ["use_speech_residual", "'true'"]),
    (
        "override drops the output adapter",
        {"kwargs": {"num_output_adapter_layers": 0}},
        ["no place for", "model.output_adapter.0", "same configuration"],
    ),
    (
        "override shortens the input adapter",
        {"kwargs": {"num_input_adapter_layers": 1}},
        ["no place for", "input_adapter.1"],
    ),
    ("override drops dynamic pooling", {"kwargs": {"use_dynamic_pooling": False}}, ["no place for", "selector"]),
    ("override adds an adapter layer", {"kwargs": {"num_output_adapter_layers": 3}}, ["lacks", "output_adapter.2"]),
]


def test_from_pretrained_refuses_a_folder_without_config_json(saved_folder, tmp_path):
    """transformers would build the default config (a 7B-parameter Llama) and fill it with random weights."""
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        SmolTolkForCausalLM.from_pretrained(linked_copy_without_config(saved_folder, str(tmp_path / "no_config")))


def test_from_pretrained_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model folder at .*missing"):
        SmolTolkForCausalLM.from_pretrained(str(tmp_path / "missing"))


@pytest.mark.parametrize("case, fragments", [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES])
def test_from_pretrained_refuses(saved_folder, tmp_path, case, fragments):
    folder = (
        with_config_edit(saved_folder, str(tmp_path / "edited"), **case["config"]) if "config" in case else saved_folder
    )
    with pytest.raises(ValueError) as caught:
        SmolTolkForCausalLM.from_pretrained(folder, **case.get("kwargs", {}))
    for fragment in fragments:
        assert fragment in str(caught.value)


def short_mask_with_cache(model):
    """A cached step whose mask covers the new ids only, not the cached prefix."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(torch.tensor([[5, 6, 7]]), cache=cache)
    return model(torch.tensor([[8]]), attention_mask=torch.ones(1, 1, dtype=torch.long), cache=cache)


FORWARD_CASES = [
    ("float ids", lambda m: m(torch.tensor([[5.0, 6.0]])), ["integer ids", "torch.float32"]),
    ("bool ids", lambda m: m(torch.tensor([[True, False]])), ["integer ids", "torch.bool"]),
    ("1-D ids", lambda m: m(torch.tensor([5, 6])), ["(batch, seq)", "(2,)", "ids[None]"]),
    ("empty ids", lambda m: m(torch.zeros(1, 0, dtype=torch.long)), ["non-empty", "(1, 0)"]),
    ("list ids", lambda m: m([[5, 6]]), ["torch.LongTensor", "list"]),
    ("id past the vocabulary", lambda m: m(torch.tensor([[5, 10_000]])), ["input_ids must lie in", "10000"]),
    (
        "mask shorter than the ids",
        lambda m: m(torch.tensor([[5, 6, 7, 8]]), attention_mask=torch.ones(1, 3, dtype=torch.long)),
        ["attention_mask has shape (1, 3)", "(1, 4)"],
    ),
    (
        "mask of another batch size",
        lambda m: m(torch.tensor([[5, 6]]), attention_mask=torch.ones(2, 2, dtype=torch.long)),
        ["(2, 2)", "(1, 2)"],
    ),
    ("mask without the cached prefix", short_mask_with_cache, ["(1, 1)", "(1, 4)", "cached length 3"]),
]


@pytest.mark.parametrize("call, fragments", [c[1:] for c in FORWARD_CASES], ids=[c[0] for c in FORWARD_CASES])
def test_forward_refuses(tiny_smoltolk, call, fragments):
    with pytest.raises(ValueError) as caught, torch.no_grad():
        call(tiny_smoltolk)
    for fragment in fragments:
        assert fragment in str(caught.value)
