"""The KV cache across transformers releases: slots for every layer, both argument names, static caches, and model
folders that move between releases as remote code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers
from transformers import DynamicCache, LlamaConfig, StaticCache

from helpers import TINY_BACKBONE, assert_same_logits, mixed_ids, prompts, speech_model
from smoltolk_hf import SmolTolkConfig
from smoltolk_hf.modeling_smoltolk import trailing_speech_span_start

GENERATION = dict(max_new_tokens=12, do_sample=False, repetition_penalty=3.0)


def left_padded(cfg: SmolTolkConfig, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and 2D attention mask of `batch`, left-padded with the pad token to its longest prompt."""
    width = max(map(len, batch))
    ids = torch.tensor([[cfg.pad_token_id] * (width - len(p)) + p for p in batch])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    return ids, mask


def test_caches_built_from_the_config_have_a_slot_for_every_layer():
    cfg = SmolTolkConfig(**TINY_BACKBONE, num_speech_units=20, num_input_adapter_layers=2, num_output_adapter_layers=1)
    assert cfg.num_total_layers == 3 + 2 + 1
    assert len(DynamicCache(config=cfg).layers) == cfg.num_total_layers
    assert len(StaticCache(config=cfg, max_cache_len=16).layers) == cfg.num_total_layers
    # Only the decoder side seen by cache builders counts the adapters; the config itself describes the backbone.
    assert cfg.num_hidden_layers == 3 and cfg.get_text_config() is cfg
    decoder = cfg.get_text_config(decoder=True)
    assert decoder.num_hidden_layers == cfg.num_total_layers and decoder.get_text_config(decoder=True) is decoder
    assert (decoder.num_key_value_heads, decoder.head_dim) == (cfg.num_key_value_heads, cfg.head_dim)


def test_cache_is_accepted_under_both_names():
    model = speech_model()
    cfg = model.config
    ids = mixed_ids(cfg, batch=1)
    span = trailing_speech_span_start(ids[:, :-1], cfg.speech_token_offset)
    with torch.no_grad():
        full = model(ids).logits[:, -1]
        for name in ("cache", "past_key_values"):
            cache = DynamicCache(config=cfg)
            model(ids[:, :-1], **{name: cache})
            step = model(ids[:, -1:], speech_span_start=span, **{name: cache}).logits[:, -1]
            assert_same_logits(step, full, atol=1e-5)
    with pytest.raises(ValueError, match="Pass the cache once"):
        model(ids, cache=DynamicCache(config=cfg), past_key_values=DynamicCache(config=cfg))


def test_cache_built_for_the_backbone_is_refused():
    model = speech_model()
    backbone_cache = DynamicCache(config=LlamaConfig(**TINY_BACKBONE))
    with pytest.raises(ValueError, match=r"needs a cache with 7 layers .*`DynamicCache\(config=model.config\)"):
        model(mixed_ids(model.config, batch=1), cache=backbone_cache)


def test_user_built_static_cache_continues_like_the_full_forward():
    model = speech_model()
    cfg = model.config
    ids = mixed_ids(cfg, batch=2)
    cache = StaticCache(config=cfg, max_cache_len=ids.shape[1] + 4)
    split = ids.shape[1] - 3
    with torch.no_grad():
        full = model(ids).logits[:, split:]
        model(ids[:, :split], cache=cache)
        span = trailing_speech_span_start(ids[:, :split], cfg.speech_token_offset)
        rest = model(ids[:, split:], cache=cache, speech_span_start=span).logits
    assert_same_logits(rest, full, atol=1e-5)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_one_id_at_a_time_matches_the_full_forward_on_a_left_padded_batch(cache_kind, attn_implementation):
    """A decoding step (one query per row) gets the input adapter's span window as a key mask: the logits of every
    step equal the full forward's, with left padding and speech spans that continue from the cache."""
    model = speech_model(attn_implementation=attn_implementation)
    assert model.config._attn_implementation == attn_implementation
    cfg = model.config
    kinds = ["speech", "mixed", "text_then_speech_marker"]
    ids, mask = left_padded(cfg, [prompts(cfg)[kind] for kind in kinds])
    width, prefix = ids.shape[1], 3
    cache = DynamicCache() if cache_kind == "dynamic" else StaticCache(config=cfg, max_cache_len=width)
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        steps = [model(ids[:, :prefix], attention_mask=mask[:, :prefix], cache=cache).logits]
        for t in range(prefix, width):
            span = trailing_speech_span_start(ids[:, :t], cfg.speech_token_offset)
            step = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, speech_span_start=span)
            steps.append(step.logits)
    real = mask.bool()
    assert (ids[real] >= cfg.speech_token_offset).sum() >= 8  # speech steps, not only text ones
    assert_same_logits(torch.cat(steps, dim=1)[real], full[real], atol=1e-5)


@pytest.mark.parametrize("kind", ["text", "speech", "text_then_speech_marker", "mixed"])
def test_static_cache_generates_the_tokens_of_the_dynamic_cache(kind):
    model = speech_model()
    prompt = torch.tensor([prompts(model.config)[kind]])
    dynamic = model.generate(prompt, **GENERATION)
    static = model.generate(prompt, cache_implementation="static", **GENERATION)
    assert torch.equal(dynamic, static)
    assert len(set(dynamic[0, prompt.shape[1] :].tolist())) > 1  # a real continuation, not one repeated token


def test_static_cache_left_padded_batch_matches_dynamic():
    model = speech_model()
    cfg = model.config
    ids, mask = left_padded(cfg, [prompts(cfg)["speech"], prompts(cfg)["text"][:3], prompts(cfg)["mixed"]])
    settings = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=cfg.pad_token_id)
    assert torch.equal(model.generate(ids, **settings), model.generate(ids, cache_implementation="static", **settings))


# ----- model folders across transformers releases ----------------------------------------------------------------

OTHER_PYTHON = os.environ.get("SMOLTOLK_OTHER_PYTHON")

# Run by either interpreter. `save` builds the tiny model with the package; `load` runs where `smoltolk_hf` cannot be
# imported and sees only the folder's remote code. Both write logits and greedy generations with and without cache.
_CROSS_VERSION_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    mode, folder, out = sys.argv[1:4]
    if mode == "save":
        sys.path.insert(0, {tests!r})
        from helpers import speech_model
        model = speech_model()
        model.save_pretrained(folder)
    else:
        sys.modules["smoltolk_hf"] = None  # importing the package now fails
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    ids = torch.tensor(json.load(open(folder + "/ids.json")))
    with torch.no_grad():
        logits = model(ids).logits
    settings = dict(max_new_tokens=10, do_sample=False, repetition_penalty=3.0)
    cached = model.generate(ids[:1], **settings)
    uncached = model.generate(ids[:1], use_cache=False, **settings)
    static = model.generate(ids[:1], cache_implementation="static", **settings)
    torch.save(dict(logits=logits, cached=cached, uncached=uncached, static=static), out)
    print(transformers.__version__)
    """
).format(tests=os.path.dirname(os.path.abspath(__file__)))


def _run(python, mode, folder, out, tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / f"hf_home_{mode}"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [python, "-c", _CROSS_VERSION_SCRIPT, mode, str(folder), str(out)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = torch.load(out)
    assert torch.equal(results["cached"], results["uncached"]) and torch.equal(results["cached"], results["static"])
    return result.stdout.strip().splitlines()[-1], results


@pytest.mark.cross_version
@pytest.mark.skipif(not OTHER_PYTHON, reason="set SMOLTOLK_OTHER_PYTHON to an interpreter with another transformers")
@pytest.mark.parametrize("saved_by", ["this", "other"])
def test_model_folder_moves_between_transformers_releases(saved_by, tmp_path):
    """Saved under one release, loaded as remote code under the other: same logits, working cached generation."""
    saver, loader = (sys.executable, OTHER_PYTHON) if saved_by == "this" else (OTHER_PYTHON, sys.executable)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "ids.json").write_text(json.dumps(mixed_ids(SmolTolkConfig(**TINY_BACKBONE, num_speech_units=20)).tolist()))
    save_version, saved = _run(saver, "save", folder, tmp_path / "saved.pt", tmp_path)
    load_version, loaded = _run(loader, "load", folder, tmp_path / "loaded.pt", tmp_path)
    assert save_version != load_version, "SMOLTOLK_OTHER_PYTHON must have another transformers release"
    assert transformers.__version__ in (save_version, load_version)
    assert_same_logits(saved["logits"], loaded["logits"])
    assert torch.equal(saved["cached"], loaded["cached"])
