"""Fixtures shared by the test files: tiny models (fast on 2 CPU cores, no downloads). Plain helpers live in
helpers.py."""

import os

import pytest
import torch
from helpers import (
    NUM_UNITS,
    TINY_BACKBONE,  # noqa: F401  (tests/test_cache.py imports it from here)
    tiny_text_model,
)
from transformers import LlamaForCausalLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def text_model() -> LlamaForCausalLM:
    return tiny_text_model()


@pytest.fixture
def tiny_smoltolk():
    from smoltolk_hf import SmolTolkForCausalLM

    torch.manual_seed(1)
    return SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS).eval()
