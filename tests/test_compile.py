"""The forward is compile-ready: `torch.compile(model, fullgraph=True)` captures the forward, the loss and the
training step in one graph (any graph break would raise), with the results of eager mode; generation with the
static cache and a compiled forward gives eager's tokens; the checks that read values run outside the graph.

Most tests use the `eager` backend, which runs Dynamo's full-graph capture (the part that breaks on host syncs and
data-dependent branches) without the minutes of C++ code generation; the `slow` one compiles with the default
backend (inductor).
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import entropy_model, mixed_ids, one_sgd_step, padded_examples, prompts, reference_sgd_step

from smoltolk_hf import SmolTolkForCausalLM


@pytest.fixture(autouse=True)
def fresh_compile_state():
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def padded_batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of mixed ids, the second left-padded by 3 positions (text and speech ids both present)."""
    ids = mixed_ids(cfg)
    ids[1, :3] = 0
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def labels_for(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ids.masked_fill(mask == 0, -100)


def test_forward_compiles_to_one_graph(tiny_smoltolk):
    ids, mask = padded_batch(tiny_smoltolk.config)
    compiled = torch.compile(tiny_smoltolk, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected = tiny_smoltolk(input_ids=ids, attention_mask=mask, output_layer_weights=True)
        got = compiled(input_ids=ids, attention_mask=mask, output_layer_weights=True)
    assert torch.equal(torch.isinf(got.logits), torch.isinf(expected.logits))
    torch.testing.assert_close(got.logits, expected.logits)
    torch.testing.assert_close(got.layer_weights, expected.layer_weights)


def training_step(model, call, ids, mask, labels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward through `call` (the model or its compiled version); the gradients of `model`."""
    model.zero_grad(set_to_none=True)
    out = call(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def check_compiled_training_step(backend: str, config_overrides: dict | None = None) -> None:
    from helpers import NUM_UNITS, tiny_text_model

    torch.manual_seed(1)
    overrides = config_overrides or {}
    model = SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS, **overrides)
    model.train()
    ids, mask = padded_batch(model.config)
    labels = labels_for(ids, mask)
    expected, expected_grads = training_step(model, model, ids, mask, labels)
    got, grads = training_step(model, torch.compile(model, fullgraph=True, backend=backend), ids, mask, labels)
    scalars = ("loss", "text_loss", "speech_loss", "layer_weights_entropy", "num_text_targets", "num_speech_targets")
    for name in scalars:
        torch.testing.assert_close(getattr(got, name), getattr(expected, name))
    assert grads.keys() == expected_grads.keys() and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_training_step_compiles_to_one_graph():
    """Forward, the per-modality loss (heads on every position, unscored targets ignored) and backward."""
    check_compiled_training_step("eager")


def test_training_step_compiles_without_pooling_and_adapters():
    check_compiled_training_step(
        "eager",
        {
            "use_layer_pooling": False,
            "use_dynamic_pooling": False,
            "num_input_adapter_layers": 0,
            "num_output_adapter_layers": 0,
        },
    )


@pytest.mark.slow
def test_training_step_compiles_with_inductor():
    """The default backend: AOT autograd traces the backward too, inductor generates the kernels."""
    check_compiled_training_step("inductor")


def test_generate_with_static_cache_and_compiled_forward_gives_eager_tokens(tiny_smoltolk):
    cfg = tiny_smoltolk.config
    prompt = torch.tensor([prompts(cfg)["mixed"]])
    settings = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "cache_implementation": "static"}
    expected = tiny_smoltolk.generate(prompt, **settings)
    generated = expected[0, prompt.shape[1] :]
    assert (generated < cfg.vocab_size).any() or (generated >= cfg.speech_token_offset).any()
    tiny_smoltolk.forward = torch.compile(tiny_smoltolk.forward, fullgraph=True, backend="eager")
    assert torch.equal(tiny_smoltolk.generate(prompt, **settings), expected)


def test_check_inputs_refuses_outside_the_compiled_region(tiny_smoltolk):
    """A compiled forward cannot read values; `check_inputs` gives the eager forward's errors without running it."""
    cfg = tiny_smoltolk.config
    ids = mixed_ids(cfg)
    tiny_smoltolk.check_inputs(ids, labels=ids, attention_mask=torch.ones_like(ids))  # valid: no error
    with pytest.raises(ValueError, match=f"input_ids must lie in \\[0, {cfg.joint_vocab_size}\\)"):
        tiny_smoltolk.check_inputs(ids.masked_fill(ids == ids[0, 0], cfg.joint_vocab_size))
    with pytest.raises(ValueError, match="labels must be joint ids"):
        tiny_smoltolk.check_inputs(ids, labels=ids.masked_fill(ids == ids[0, 0], -200))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        tiny_smoltolk.check_inputs(ids, attention_mask=torch.ones(2, 3, dtype=torch.long))


@pytest.mark.slow
def test_trainer_with_torch_compile_trains_as_eager_and_checks_each_batch(tmp_path):
    model = entropy_model()
    examples = padded_examples(model.config)
    expected = reference_sgd_step(copy.deepcopy(model), examples)
    trainer = one_sgd_step(model, examples, str(tmp_path), per_device=2, accumulation=2, torch_compile_backend="eager")
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), expected[name], atol=1e-6, rtol=1e-5, msg=name)

    bad = trainer.data_collator(examples[:2])
    bad["labels"][0, 1] = -200
    with pytest.raises(ValueError, match="labels must be joint ids"):
        trainer.compute_loss(torch.compile(model, backend="eager"), bad)
