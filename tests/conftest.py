"""Fixtures shared by the test files: tiny models (fast on 2 CPU cores, no downloads). Plain helpers live in
helpers.py."""

import os

# Before anything imports transformers / huggingface_hub, which read it once at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import NUM_UNITS, tiny_text_model  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402


@pytest.fixture
def text_model() -> LlamaForCausalLM:
    return tiny_text_model()


@pytest.fixture
def tiny_smoltolk():
    from smoltolk_hf import SmolTolkForCausalLM

    torch.manual_seed(1)
    return SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS).eval()
