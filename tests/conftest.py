"""Shared tiny models for the test suite (fast on 2 CPU cores, no downloads)."""

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_BACKBONE = dict(
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    # A wide init makes random models prefer varied tokens, so generation checks are not trivially constant.
    initializer_range=0.2,
)
NUM_UNITS = 20


def tiny_text_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_BACKBONE)).eval()


@pytest.fixture
def text_model() -> LlamaForCausalLM:
    return tiny_text_model()


@pytest.fixture
def tiny_smoltolk():
    from smoltolk_hf import SmolTolkForCausalLM

    torch.manual_seed(1)
    return SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS).eval()
