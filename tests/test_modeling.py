"""Behaviour of SmolTolkConfig / SmolTolkForCausalLM on tiny models."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    NUM_UNITS,
    TINY_BACKBONE,
    assert_same_logits,
    mixed_ids,
    prompts,
    speech,
    speech_model,
    tiny_text_model,
)
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, DynamicCache, LlamaConfig, LlamaForCausalLM

from smoltolk_hf import SmolTolkConfig, SmolTolkForCausalLM, SmolTolkModel
from smoltolk_hf.configuration_smoltolk import NEW_MODEL_POOLING_NORM, NEW_MODEL_SPEECH_EMBEDDING_SCALE
from smoltolk_hf.modeling_smoltolk import _span_starts, trailing_speech_span_start
from smoltolk_hf.summary import PAPER_TABLE5, count_parameters

# ----- configuration ------------------------------------------------------------------------------------------


def test_id_layout():
    cfg = SmolTolkConfig(**TINY_BACKBONE, num_speech_units=NUM_UNITS)
    assert (cfg.text_marker_id, cfg.speech_marker_id, cfg.speech_token_offset) == (100, 101, 102)
    assert (cfg.speech_eos_id, cfg.speech_pad_id, cfg.joint_vocab_size) == (122, 123, 124)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(use_layer_pooling=False), "use_dynamic_pooling=False"),
        (dict(use_dynamic_pooling=False, entropy_beta=0.01), "entropy_beta=0.0"),
        (dict(entropy_beta=-1.0), "entropy_beta must be >= 0"),
        (dict(num_speech_units=0), "num_speech_units"),
        (dict(num_input_adapter_layers=-1), "num_input_adapter_layers"),
        (dict(pad_token_id=500), "pad_token_id"),
        (dict(pooling_norm="rms"), r"pooling_norm must be one of \['none', 'rmsnorm'\], got 'rms' \(did you mean"),
        (dict(pooling_norm=True), "pooling_norm must be a str"),
        (dict(use_layer_pooling=False, use_dynamic_pooling=False, pooling_norm="rmsnorm"), "Set pooling_norm='none'"),
        (dict(speech_embedding_scale=0.0), "speech_embedding_scale must be a positive finite number"),
        (dict(speech_embedding_scale=float("inf")), "speech_embedding_scale must be a positive finite number"),
        (dict(speech_embedding_scale="10"), "speech_embedding_scale must be a float"),
    ],
)
def test_invalid_config_raises(overrides, message):
    fields = {**TINY_BACKBONE, **overrides}
    with pytest.raises(ValueError, match=message):
        SmolTolkConfig(**fields)


def test_unknown_preset():
    with pytest.raises(ValueError, match="smoltolk-150m"):
        SmolTolkConfig.from_preset("smoltolk-7b")


@pytest.mark.parametrize("preset", sorted(PAPER_TABLE5))
def test_preset_parameter_counts_match_paper(preset):
    """Paper Table 5: layers in all and speech-specific parameters within 5%."""
    config = SmolTolkConfig.from_preset(preset)
    with torch.device("meta"):
        model = SmolTolkForCausalLM(config)
    layers, _, speech_params = PAPER_TABLE5[preset]
    count = count_parameters(model)
    assert count.layers == layers
    assert abs(count.speech - speech_params) / speech_params < 0.05, count.speech
    assert config.rope_parameters["rope_theta"] == 100_000.0


def test_pooling_norm_defaults_old_configs_vs_new_models(text_model):
    """The class default is the authors' architecture (what a config.json without the field was trained with);
    new models get the RMSNorm on the pooled layers, except where there is no layer pooling."""
    assert SmolTolkConfig(**TINY_BACKBONE).pooling_norm == "none"
    assert NEW_MODEL_POOLING_NORM == "rmsnorm"
    for preset in ("smoltolk-150m", "smoltolk-400m", "smoltolk-2b"):
        assert SmolTolkConfig.from_preset(preset).pooling_norm == NEW_MODEL_POOLING_NORM
    assert SmolTolkConfig.from_preset("baseline-135m").pooling_norm == "none"
    assert SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS).config.pooling_norm == NEW_MODEL_POOLING_NORM
    ablation = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, **ABLATIONS["no_layer_pooling"])
    assert ablation.config.pooling_norm == "none"
    authors = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, pooling_norm="none")
    assert authors.model.layer_pooling.norm_weight is None


def test_speech_embedding_scale_multiplies_the_lookups_not_the_head(text_model, tmp_path):
    """New models (from_text_model, presets, baselines included) scale the speech lookups by 10; the tied head reads
    the table itself; the class default and a config.json without the field keep the authors' 1.0."""
    assert SmolTolkConfig(**TINY_BACKBONE).speech_embedding_scale == 1.0
    for preset in ("smoltolk-150m", "baseline-135m"):
        assert SmolTolkConfig.from_preset(preset).speech_embedding_scale == NEW_MODEL_SPEECH_EMBEDDING_SCALE == 10.0
    model = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS).eval()
    authors = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, speech_embedding_scale=1.0).eval()
    authors.load_state_dict(model.state_dict())
    cfg = model.config
    ids = mixed_ids(cfg)
    table = model.model.speech_embed_tokens.weight
    is_speech = ids >= cfg.speech_token_offset
    with torch.no_grad():
        z, z_authors = model.model.embed(ids), authors.model.embed(ids)
        assert torch.equal(z[is_speech], 10.0 * table[ids[is_speech] - cfg.speech_token_offset])
        assert torch.equal(z[~is_speech], z_authors[~is_speech])
        state = torch.randn(3, cfg.hidden_size)
        assert torch.equal(model.speech_logits(state), authors.speech_logits(state))  # same head
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["speech_embedding_scale"] == 10.0
    del saved["speech_embedding_scale"]  # a folder saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert SmolTolkForCausalLM.from_pretrained(tmp_path).config.speech_embedding_scale == 1.0


def test_config_saved_without_pooling_norm_loads_the_authors_architecture(text_model, tmp_path):
    model = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, pooling_norm="none").eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["pooling_norm"]  # a folder saved before the field existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    reloaded = SmolTolkForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.pooling_norm == "none"
    ids = mixed_ids(model.config)
    with torch.no_grad():
        assert_same_logits(model(ids).logits, reloaded(ids).logits)


def test_rmsnorm_pooling_ignores_the_scale_of_each_layer(text_model):
    """Each pooled layer output is RMS-normalised first: rescaling any layer's state changes nothing."""
    for pooling_norm, invariant in (("rmsnorm", True), ("none", False)):
        pooling = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, pooling_norm=pooling_norm)
        pooling = pooling.model.layer_pooling
        states = [torch.randn(2, 5, 32) for _ in range(3)]
        rescaled = [state * scale for state, scale in zip(states, (0.1, 30.0, 1000.0))]
        with torch.no_grad():
            (pooled, omega), (pooled_rescaled, omega_rescaled) = pooling(states), pooling(rescaled)
        assert torch.allclose(pooled, pooled_rescaled, atol=1e-4) == invariant
        assert torch.allclose(omega, omega_rescaled, atol=1e-4) == invariant
        if invariant:  # the fresh gain starts as plain RMS normalisation
            assert torch.equal(pooling.norm_weight, torch.ones(32))
        else:
            assert pooling.norm_weight is None


@pytest.mark.parametrize("pooling_norm", ["none", "rmsnorm"])
def test_layer_pooling_follows_the_paper_equations(text_model, pooling_norm):
    """Eqs. 3-4 written out: c' = sum softmax(phi)_l n(c_l), omega = softmax(S(c')), c-bar = g * sum omega_l n(c_l),
    with n the RMS normalisation (and g its gain) for "rmsnorm", the identity (and no gain) for the authors'."""
    model = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, pooling_norm=pooling_norm)
    pooling = model.model.layer_pooling
    with torch.no_grad():
        pooling.static_weights.normal_()
        if pooling.norm_weight is not None:
            pooling.norm_weight.normal_()
    states = [torch.randn(2, 5, 32) * scale for scale in (0.5, 3.0, 40.0)]
    normed = states
    if pooling_norm == "rmsnorm":
        normed = [F.rms_norm(state, (32,), eps=model.config.rms_norm_eps) for state in states]
    phi = pooling.static_weights.softmax(-1)
    static_pooled = sum(w * s for w, s in zip(phi, normed))
    omega = pooling.selector(static_pooled).softmax(-1)
    expected = sum(omega[..., i, None] * state for i, state in enumerate(normed))
    if pooling_norm == "rmsnorm":
        expected = expected * pooling.norm_weight
    with torch.no_grad():
        pooled, got_omega = pooling(states)
    torch.testing.assert_close(got_omega, omega.detach())
    torch.testing.assert_close(pooled, expected.detach())


def test_fresh_model_meets_init_targets_on_a_large_scale_backbone():
    """Issue 11 targets on a tiny backbone whose residual states grow to RMS 30-80 as a pretrained LM's do: speech
    CE within 1 nat of ln(units + 1) and selector mean max weight <= 0.5 at init; the authors' pooling misses both."""
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY_BACKBONE, "num_hidden_layers": 8, "hidden_size": 64, "intermediate_size": 128,
                            "initializer_range": 0.02})  # fmt: skip
    text_model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in text_model.model.layers:
            layer.mlp.down_proj.weight.mul_(10_000)
    for pooling_norm, meets_targets in (("rmsnorm", True), ("none", False)):
        torch.manual_seed(1)
        model = SmolTolkForCausalLM.from_text_model(text_model, NUM_UNITS, pooling_norm=pooling_norm).eval()
        units = torch.randint(0, NUM_UNITS, (4, 40), generator=torch.Generator().manual_seed(0))
        marker = torch.full((4, 1), model.config.speech_marker_id)
        ids = torch.cat([marker, units + model.config.speech_token_offset], 1)
        with torch.no_grad():
            out = model(ids, labels=ids, output_layer_weights=True)
            states = model.model(ids, output_hidden_states=True).hidden_states
        assert float(states[-2].pow(2).mean().sqrt()) > 30  # large residual states, before the final norm
        mean_max_omega = float(out.layer_weights[:, 1:].max(-1).values.mean())
        near_uniform = abs(float(out.speech_loss) - math.log(NUM_UNITS + 1)) <= 1.0
        assert (near_uniform and mean_max_omega <= 0.5) == meets_targets, (pooling_norm, out.speech_loss)


# ----- forward and loss ---------------------------------------------------------------------------------------


def test_fresh_model_reproduces_text_lm_logits(text_model):
    model = SmolTolkForCausalLM.from_text_model(text_model, num_speech_units=NUM_UNITS).eval()
    ids = torch.randint(0, TINY_BACKBONE["vocab_size"], (2, 17))
    with torch.no_grad():
        expected = text_model(ids).logits
        joint = model(ids).logits
    V = model.config.vocab_size
    assert model.config.model_type == "smoltolk"
    assert (joint[..., :V] - expected).abs().max() <= 1e-5
    assert torch.isinf(joint[..., V:]).all()
    for name, tensor in text_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    # The new parts are initialised as DESIGN.md says (not left as uninitialised memory).
    std = TINY_BACKBONE["initializer_range"]
    for table in (model.model.speech_embed_tokens.weight, model.model.input_adapter[0].mlp.up_proj.weight):
        assert abs(float(table.detach().std()) - std) < 0.25 * std
    assert torch.equal(model.model.output_adapter[1].input_layernorm.weight, torch.ones(32))
    phi = model.model.layer_pooling.static_weights
    assert 0.0 < float(phi.detach().abs().max()) < 0.05  # 0.01 * randn
    assert torch.equal(model.model.layer_pooling.selector.bias, torch.zeros(3))


def test_from_text_model_rejects_non_llama():
    with pytest.raises(ValueError, match="Llama-architecture"):
        SmolTolkForCausalLM.from_text_model(torch.nn.Linear(2, 2))


def test_loss_matches_per_modality_cross_entropy(tiny_smoltolk):
    model, cfg = tiny_smoltolk, tiny_smoltolk.config
    ids = mixed_ids(cfg)
    out = model(ids, labels=ids)
    with torch.no_grad():
        trunk = model.model(ids)
    targets = ids[:, 1:]
    text_pos = targets < cfg.vocab_size
    speech_pos = targets >= cfg.speech_token_offset
    text_lp = F.log_softmax(model.lm_head(trunk.last_hidden_state[:, :-1]), -1)
    speech_logits = model.speech_logits(trunk.speech_hidden_state[:, :-1])
    speech_logits[..., NUM_UNITS + 1] = float("-inf")  # pad
    speech_lp = F.log_softmax(speech_logits, -1)
    text_nll = -text_lp[text_pos].gather(-1, targets[text_pos][:, None]).sum()
    speech_nll = -speech_lp[speech_pos].gather(-1, (targets[speech_pos] - cfg.speech_token_offset)[:, None]).sum()
    n = text_pos.sum() + speech_pos.sum()  # markers are never targets
    assert n == targets.numel() - 3 * ids.shape[0]
    torch.testing.assert_close(out.text_loss, text_nll / text_pos.sum())
    torch.testing.assert_close(out.speech_loss, speech_nll / speech_pos.sum())
    torch.testing.assert_close(out.loss + cfg.entropy_beta * out.layer_weights_entropy, (text_nll + speech_nll) / n)
    assert out.logits is None  # training never materialises joint logits


def test_entropy_term_uses_beta_and_is_maximised(text_model):
    model = SmolTolkForCausalLM.from_text_model(text_model, num_speech_units=NUM_UNITS, entropy_beta=0.5)
    ids = mixed_ids(model.config)
    out = model(ids, labels=ids, output_layer_weights=True)
    omega = out.layer_weights
    assert omega.shape == (*ids.shape, model.config.num_hidden_layers)
    torch.testing.assert_close(omega.sum(-1), torch.ones(ids.shape))
    entropy = -(omega * omega.log()).sum(-1).mean()
    torch.testing.assert_close(out.layer_weights_entropy, entropy)
    plain = (out.text_loss * out.num_text_targets + out.speech_loss * out.num_speech_targets) / (
        out.num_text_targets + out.num_speech_targets
    )
    torch.testing.assert_close(out.loss, plain - 0.5 * entropy)


def test_span_starts_by_hand():
    # t s s t s s s | continue with s s from a cached prefix whose speech span began at 4
    is_speech = torch.tensor([[False, True, True, False, True, True, True]])
    assert _span_starts(is_speech, 0, None).tolist() == [[0, 1, 1, 3, 4, 4, 4]]
    cont = torch.tensor([[True, True, False, True]])
    assert _span_starts(cont, 7, torch.tensor([4])).tolist() == [[4, 4, 9, 10]]
    ids = torch.tensor([[5, 200, 201, 7, 200], [200, 201, 202, 203, 204]])
    assert trailing_speech_span_start(ids, 102).tolist() == [4, 0]


def test_input_adapter_is_restricted_to_each_speech_span(tiny_smoltolk):
    """Changing the first speech span must not change the adapter's output on the second one."""
    model, cfg = tiny_smoltolk, tiny_smoltolk.config
    captured = []
    hook = model.model.input_adapter[-1].register_forward_hook(lambda m, i, o: captured.append(o))
    ids = mixed_ids(cfg, batch=1)
    other = ids.clone()
    other[0, 6:12] = torch.tensor(speech(cfg, [0, 1, 2, 3, 4, 5]))  # rewrite the first span
    with torch.no_grad():
        model(ids)
        model(other)
    hook.remove()
    second_span = slice(ids.shape[1] - 5, None)
    torch.testing.assert_close(captured[0][0, second_span], captured[1][0, second_span], atol=1e-6, rtol=0)
    assert not torch.allclose(captured[0][0, 6:12], captured[1][0, 6:12])


# ----- ablations ----------------------------------------------------------------------------------------------

ABLATIONS = {
    "full": {},
    "no_input_adapter": dict(num_input_adapter_layers=0),
    "no_output_adapter": dict(num_output_adapter_layers=0),
    "no_adapters": dict(num_input_adapter_layers=0, num_output_adapter_layers=0),
    "no_dynamic_pooling": dict(use_dynamic_pooling=False),
    "no_layer_pooling": dict(use_layer_pooling=False, use_dynamic_pooling=False),
    "no_residual": dict(use_speech_residual=False),
    "authors_pooling": dict(pooling_norm="none"),
    "baseline": dict(
        num_input_adapter_layers=0, num_output_adapter_layers=0, use_layer_pooling=False,
        use_dynamic_pooling=False, use_speech_residual=False,
    ),
}


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_trains_and_round_trips(name, tmp_path):
    model = SmolTolkForCausalLM.from_text_model(tiny_text_model(), num_speech_units=NUM_UNITS, **ABLATIONS[name])
    ids = mixed_ids(model.config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = model(ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before), set(before) - set(changed)

    model.eval()
    model.save_pretrained(tmp_path)
    reloaded = SmolTolkForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_same_logits(model(ids).logits, reloaded(ids).logits)


def test_baseline_speech_head_reads_last_layer(text_model):
    model = SmolTolkForCausalLM.from_text_model(text_model, num_speech_units=NUM_UNITS, **ABLATIONS["baseline"])
    ids = mixed_ids(model.config)
    with torch.no_grad():
        trunk = model.model(ids)
    assert torch.equal(trunk.speech_hidden_state, trunk.last_hidden_state)
    assert [n for n, _ in model.named_parameters() if not n.startswith(("model.layers", "model.norm", "model.embed"))] == [
        "model.marker_embed.weight", "model.speech_embed_tokens.weight"
    ]


# ----- save / load --------------------------------------------------------------------------------------------


def test_missing_speech_weights_fail_loudly(tiny_smoltolk, tmp_path):
    from safetensors.torch import load_file, save_file

    tiny_smoltolk.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    for key in [k for k in weights if "output_adapter" in k or "layer_pooling" in k]:
        del weights[key]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="output_adapter|layer_pooling"):
        SmolTolkForCausalLM.from_pretrained(tmp_path)


def test_auto_classes(tiny_smoltolk, tmp_path):
    tiny_smoltolk.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SmolTolkConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), SmolTolkModel)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), SmolTolkForCausalLM)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM"}
    assert (tmp_path / "modeling_smoltolk.py").exists() and (tmp_path / "configuration_smoltolk.py").exists()


def test_remote_code_loads_without_the_package(tiny_smoltolk, tmp_path):
    model_dir, ids_path = tmp_path / "model", tmp_path / "ids.pt"
    tiny_smoltolk.save_pretrained(model_dir)
    ids = mixed_ids(tiny_smoltolk.config)
    torch.save(ids, ids_path)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["smoltolk_hf"] = None  # importing the package now fails
        import torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.save(model(torch.load({str(ids_path)!r})).logits, {str(tmp_path / 'logits.pt')!r})
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        assert_same_logits(tiny_smoltolk(ids).logits, torch.load(tmp_path / "logits.pt"))


# ----- generation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "speech", "text_then_speech_marker", "mixed"])
def test_cached_generation_matches_uncached(kind):
    model = speech_model()
    prompt = torch.tensor([prompts(model.config)[kind]])
    # A repetition penalty keeps the random model from repeating one unit, so the comparison covers many steps.
    settings = dict(max_new_tokens=12, do_sample=False, repetition_penalty=3.0)
    cached = model.generate(prompt, **settings)
    uncached = model.generate(prompt, use_cache=False, **settings)
    assert torch.equal(cached, uncached)
    new = cached[0, prompt.shape[1]:]
    assert len(set(new.tolist())) > 1  # not a degenerate constant continuation
    cfg = model.config
    expect_speech = prompt[0, -1] >= cfg.speech_marker_id
    assert ((new >= cfg.speech_token_offset) == expect_speech).all() or (not expect_speech and (new < cfg.vocab_size).all())
    assert not ((new == cfg.text_marker_id) | (new == cfg.speech_marker_id) | (new == cfg.speech_pad_id)).any()


def test_cached_beam_search_matches_uncached():
    model = speech_model()
    prompt = torch.tensor([prompts(model.config)["speech"]])
    cached = model.generate(prompt, max_new_tokens=8, num_beams=3, do_sample=False)
    uncached = model.generate(prompt, max_new_tokens=8, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_matches_one_by_one():
    model = speech_model()
    cfg = model.config
    batch = [prompts(cfg)["speech"], prompts(cfg)["text"][:3], prompts(cfg)["mixed"]]
    width = max(map(len, batch))
    pad = cfg.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    together = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=pad)
    for row, p in enumerate(batch):
        alone = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, pad_token_id=pad)[0, len(p):]
        got = together[row, width:][: len(alone)]
        assert torch.equal(got, alone), (row, got, alone)


def test_input_adapter_packed_path_matches_the_full_path(tiny_smoltolk):
    """Without a cache the input adapter runs on the speech positions only, packed across rows and spans; with a
    cache it runs on every position with a per-span mask. Both give the same states at every real position (left
    padding and speech spans at different places in each row included)."""
    model, cfg = tiny_smoltolk, tiny_smoltolk.config
    ids = mixed_ids(cfg, batch=3)
    ids[2, :4] = cfg.pad_token_id
    mask = torch.ones_like(ids)
    mask[2, :4] = 0
    with torch.no_grad():
        packed = model.model(ids, attention_mask=mask, use_cache=False)
        full = model.model(ids, attention_mask=mask, use_cache=True)
    real = mask.bool()
    for name in ("last_hidden_state", "speech_hidden_state"):
        torch.testing.assert_close(getattr(packed, name)[real], getattr(full, name)[real], rtol=1e-5, atol=1e-5)
    # Text positions pass the adapter unchanged; speech positions do not.
    z, positions = model.model.embed(ids), torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        adapted = model.model.input_adapter(
            z, ids >= cfg.speech_token_offset, mask, None, 0, None, position_ids=positions,
            position_embeddings=model.model.rotary_emb(z, positions), use_cache=False,
        )  # fmt: skip
    text = ids < cfg.speech_token_offset
    assert torch.equal(adapted[text], z[text])
    assert not torch.allclose(adapted[~text & real], z[~text & real])


def test_speech_generation_stops_at_speech_eos(tiny_smoltolk):
    model, cfg = tiny_smoltolk, tiny_smoltolk.config
    with torch.no_grad():  # make eos the only sensible speech continuation
        model.model.speech_embed_tokens.weight[cfg.num_speech_units] = 50 * model.model.speech_embed_tokens.weight[cfg.num_speech_units]
    prompt = torch.tensor([prompts(cfg)["speech"]])
    out = model.generate(prompt, max_new_tokens=10, do_sample=False)
    new = out[0, prompt.shape[1]:].tolist()
    assert cfg.speech_eos_id in new and new.index(cfg.speech_eos_id) == len(new) - 1


def test_sampling_respects_modality():
    model = speech_model()
    cfg = model.config
    torch.manual_seed(0)
    prompt = torch.tensor([prompts(cfg)["text_then_speech_marker"]] * 4)
    out = model.generate(prompt, max_new_tokens=10, do_sample=True, temperature=1.5, top_k=0, pad_token_id=0)
    new = out[:, prompt.shape[1]:]
    assert ((new >= cfg.speech_token_offset) & (new <= cfg.speech_eos_id) | (new == 0)).all()


# ----- attention implementations and training utilities ---------------------------------------------------------


def test_eager_and_sdpa_agree(tiny_smoltolk, tmp_path):
    tiny_smoltolk.save_pretrained(tmp_path)
    ids = mixed_ids(tiny_smoltolk.config)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    results = {}
    for impl in ("eager", "sdpa"):
        model = SmolTolkForCausalLM.from_pretrained(tmp_path, attn_implementation=impl).eval()
        with torch.no_grad():
            # Padded positions attend to nothing; implementations fill them differently, so compare real ones.
            results[impl] = model(ids, attention_mask=mask).logits[mask.bool()]
    finite = torch.isfinite(results["eager"])
    assert torch.equal(finite, torch.isfinite(results["sdpa"]))
    assert (results["eager"][finite] - results["sdpa"][finite]).abs().max() <= 1e-4


def test_from_text_model_runs_the_text_models_attention_unless_told():
    text = tiny_text_model()
    text.config._attn_implementation = "eager"
    assert SmolTolkForCausalLM.from_text_model(text, num_speech_units=NUM_UNITS).config._attn_implementation == "eager"
    chosen = SmolTolkForCausalLM.from_text_model(text, num_speech_units=NUM_UNITS, attn_implementation="sdpa")
    assert chosen.config._attn_implementation == "sdpa"


def test_gradient_checkpointing_trains(tiny_smoltolk):
    model, ids = tiny_smoltolk.train(), mixed_ids(tiny_smoltolk.config)
    reference = torch.autograd.grad(model(ids, labels=ids).loss, list(model.parameters()))
    model.activation_checkpointing_enable()
    checkpointed = torch.autograd.grad(model(ids, labels=ids).loss, list(model.parameters()))
    for a, b in zip(reference, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ----- bad input ------------------------------------------------------------------------------------------------


def test_out_of_range_ids(tiny_smoltolk):
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 124\)"):
        tiny_smoltolk(torch.tensor([[1, 2, 124]]))
    with pytest.raises(ValueError, match="input_ids must lie"):
        tiny_smoltolk(torch.tensor([[-1, 2]]))


def test_too_long_sequence(tiny_smoltolk):
    with pytest.raises(ValueError, match="max_position_embeddings=128"):
        tiny_smoltolk(torch.ones(1, 129, dtype=torch.long))


def test_labels_must_match_inputs(tiny_smoltolk):
    ids = torch.ones(2, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="labels must have the shape of input_ids"):
        tiny_smoltolk(ids, labels=ids[:, :-1])
    for bad in (999, -5, -101):  # above the joint vocabulary, negative but not the ignore index -100
        labels = ids.clone()
        labels[0, 3] = bad
        with pytest.raises(ValueError, match=rf"labels must be joint ids .* or -100; got {bad}"):
            tiny_smoltolk(ids, labels=labels)


def test_prepared_4d_mask_rejected(tiny_smoltolk):
    with pytest.raises(ValueError, match="2D padding mask"):
        tiny_smoltolk(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.zeros(1, 1, 4, 4))


def test_inputs_embeds_rejected(tiny_smoltolk):
    with pytest.raises(ValueError, match="needs `input_ids`"):
        tiny_smoltolk(inputs_embeds=torch.zeros(1, 3, 32))


def test_continuing_speech_from_cache_needs_span_start(tiny_smoltolk):
    cfg = tiny_smoltolk.config
    prompt = torch.tensor([prompts(cfg)["speech"]])
    cache = DynamicCache(config=cfg)
    tiny_smoltolk(prompt, cache=cache)
    step = torch.tensor([[cfg.speech_token_offset + 1]])
    with pytest.raises(ValueError, match="speech_span_start"):
        tiny_smoltolk(step, cache=cache)
    span = trailing_speech_span_start(prompt, cfg.speech_token_offset)
    with torch.no_grad():
        cached = tiny_smoltolk(step, cache=cache, speech_span_start=span).logits[:, -1]
        full = tiny_smoltolk(torch.cat([prompt, step], 1)).logits[:, -1]
    assert_same_logits(cached, full, atol=1e-5)


def test_input_adapter_falls_back_to_sdpa_for_mask_blind_attention(tiny_smoltolk):
    """Flash attention cannot take the per-span mask: any such implementation runs the input adapter with sdpa."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("sdpa_alias", sdpa_attention_forward)
    AttentionMaskInterface.register("sdpa_alias", sdpa_mask)
    ids = mixed_ids(tiny_smoltolk.config)
    with torch.no_grad():
        reference = tiny_smoltolk(ids).logits
        tiny_smoltolk.set_attn_implementation("sdpa_alias")
        aliased = tiny_smoltolk(ids).logits
    assert tiny_smoltolk.model.input_adapter[0].self_attn.config._attn_implementation == "sdpa"
    assert tiny_smoltolk.model.layers[0].self_attn.config._attn_implementation == "sdpa_alias"
    assert_same_logits(reference, aliased, atol=1e-6)
