"""Conversion of the paper authors' `.pt` checkpoints (synthetic ones with exactly their layout, tiny sizes)."""

import json
import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from smoltolk_hf.configuration_smoltolk import SmolTolkConfig
from smoltolk_hf.conversion import (
    authors_config,
    cli_convert_authors,
    convert_authors_checkpoint,
    convert_authors_state_dict,
)
from smoltolk_hf.modeling_smoltolk import SmolTolkForCausalLM

TINY_SIZES = dict(
    vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
    num_key_value_heads=1, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
)  # fmt: skip
V = TINY_SIZES["vocab_size"]
NUM_LAYERS = TINY_SIZES["num_hidden_layers"]
AUDIO_VOCAB = 8  # 6 units, eos, pad
BLOCK_SIZE = 32

FULL = dict(n_audio_in_layers=2, n_audio_out_layers=2, layer_wa_audio=True, layer_selwa_audio=True,
            raw_speech_residual=True, entropy_reg=0.01)  # fmt: skip
VARIANTS = {
    "smoltolk": FULL,
    "no_adapters": {**FULL, "n_audio_in_layers": 0, "n_audio_out_layers": 0},
    "no_selector": {**FULL, "layer_selwa_audio": False, "entropy_reg": 0.0},
    "no_residual": {**FULL, "raw_speech_residual": False},
    "baseline": dict(n_audio_in_layers=0, n_audio_out_layers=0, layer_wa_audio=False, layer_selwa_audio=False,
                     raw_speech_residual=False, entropy_reg=0.0),
}  # fmt: skip


class _NotPlainData:
    """Anything pickled by reference: loading it needs weights_only=False."""


def make_authors_checkpoint(
    variant: dict | None = None, dtype: torch.dtype = torch.float32, compiled: bool = False, seed: int = 0
) -> dict:
    """A checkpoint dict laid out exactly as the authors' trainer writes it, with random tensors."""
    args = {**FULL, **(variant or {})}
    torch.manual_seed(seed)
    llama_config = LlamaConfig(**TINY_SIZES, tie_word_embeddings=True)
    state = {f"context_model.{k}": v for k, v in LlamaModel(llama_config).state_dict().items()}
    del state["context_model.embed_tokens.weight"]  # their backbone's embeddings live in txt_embed
    for prefix, flag in (("audio_in_layers", "n_audio_in_layers"), ("audio_out_layers", "n_audio_out_layers")):
        for i in range(args[flag]):
            state.update({f"{prefix}.{i}.{k}": v for k, v in LlamaDecoderLayer(llama_config, i).state_dict().items()})
    if args["layer_wa_audio"]:
        state["layer_weights"] = torch.empty(NUM_LAYERS, 1, 1, 1)
    if args["layer_selwa_audio"]:
        state["layer_selector.weight"] = torch.empty(NUM_LAYERS, TINY_SIZES["hidden_size"])
        state["layer_selector.bias"] = torch.empty(NUM_LAYERS)
    state["txt_embed.weight"] = torch.empty(V + 3, TINY_SIZES["hidden_size"])
    state["audio_embed.0.weight"] = torch.empty(AUDIO_VOCAB, TINY_SIZES["hidden_size"])
    # Random values everywhere (norm weights included) so a misplaced tensor cannot go unnoticed.
    state = {k: torch.randn(v.shape).to(dtype) for k, v in state.items()}
    state["txt_unembed.weight"] = state["txt_embed.weight"]  # tied, as in their module
    state["audio_unembed.0.weight"] = state["audio_embed.0.weight"]
    if compiled:
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    model_args = dict(
        audio_vocabsize=AUDIO_VOCAB, txt_vocabsize=V + 3, block_size=BLOCK_SIZE, audio_pad_token=AUDIO_VOCAB - 1,
        bop_token=V, eop_token=V + 1, swt_token=V + 2, n_codebooks=1, tie_audio_embeddings=True,
        backbone="tiny/llama", warm_init=True, freeze_backbone=False, freeze_txt_inout=False, selwa_in_layer=None,
        selwa_linear=True, torch_dtype=torch.bfloat16, attn_implementation="flash_attn", **args,
    )  # fmt: skip
    return {
        "model": state,
        "model_args": model_args,
        "optimizer": {"state": {}, "param_groups": []},
        "iter_num": 1000,
        "best_val_loss": torch.tensor(2.5),
        "config": {"learning_rate": 3e-4, "datasets": ["ls960"]},
    }


def save(checkpoint: dict, tmp_path, name: str = "ckpt.pt"):
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def assert_every_tensor_placed(authors_state: dict, config: SmolTolkConfig, converted: dict) -> None:
    """Every SmolTolk tensor equals its authors' source bit for bit, and every authors' tensor was used."""
    state = {k.removeprefix("_orig_mod."): v for k, v in authors_state.items()}
    txt = state.pop("txt_embed.weight")
    swt = txt[V + 2]
    assert torch.equal(converted["model.embed_tokens.weight"], txt[:V])
    assert torch.equal(converted["lm_head.weight"], state.pop("txt_unembed.weight")[:V])
    assert torch.equal(converted["model.marker_embed.weight"], torch.stack([swt, swt]))
    assert torch.equal(converted["model.speech_embed_tokens.weight"], state.pop("audio_embed.0.weight"))
    assert torch.equal(converted["model.speech_embed_tokens.weight"], state.pop("audio_unembed.0.weight"))
    if "layer_weights" in state:
        assert torch.equal(converted["model.layer_pooling.static_weights"], state.pop("layer_weights").view(-1))
    renames = {
        "context_model.": "model.",
        "audio_in_layers.": "model.input_adapter.",
        "audio_out_layers.": "model.output_adapter.",
        "layer_selector.": "model.layer_pooling.selector.",
    }
    for key, tensor in state.items():
        prefix = next(p for p in renames if key.startswith(p))
        assert torch.equal(converted[renames[prefix] + key[len(prefix) :]], tensor), key
    with torch.device("meta"):
        assert set(converted) == set(SmolTolkForCausalLM(config).state_dict())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_mapping_places_every_tensor_and_sets_switches(name):
    checkpoint = make_authors_checkpoint(VARIANTS[name])
    config, converted = convert_authors_state_dict(checkpoint, backbone_sizes=TINY_SIZES)

    args = VARIANTS[name]
    assert config.num_input_adapter_layers == args["n_audio_in_layers"]
    assert config.num_output_adapter_layers == args["n_audio_out_layers"]
    assert config.use_layer_pooling == args["layer_wa_audio"]
    assert config.use_dynamic_pooling == args["layer_selwa_audio"]
    assert config.use_speech_residual == args["raw_speech_residual"]
    assert config.entropy_beta == args["entropy_reg"]
    assert config.pooling_norm == "none"  # the authors' architecture, whatever new models default to
    assert config.num_speech_units == AUDIO_VOCAB - 2 and config.vocab_size == V
    assert config.max_position_embeddings == BLOCK_SIZE and config.tie_word_embeddings
    assert config.rope_parameters["rope_theta"] == 10_000.0
    assert_every_tensor_placed(checkpoint["model"], config, converted)


def test_known_backbone_names_give_their_sizes_and_own_rope_base():
    smollm_vocab = dict(txt_vocabsize=49155, bop_token=49152, eop_token=49153, swt_token=49154)
    args = {**make_authors_checkpoint()["model_args"], **smollm_vocab}
    config = authors_config({**args, "backbone": "HuggingFaceTB/SmolLM-1.7B"})
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (24, 2048, 32)
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 10_000.0}
    smollm2 = authors_config({**args, "backbone": "HuggingFaceTB/SmolLM2-135M"})
    assert (smollm2.num_hidden_layers, smollm2.hidden_size) == (30, 576)
    assert smollm2.rope_parameters["rope_theta"] == 100_000.0


def test_convert_fp32_reloads_and_text_logits_match_plain_llama(tmp_path):
    checkpoint = make_authors_checkpoint()
    out = convert_authors_checkpoint(save(checkpoint, tmp_path), tmp_path / "hf", dtype=torch.float32,
                                     backbone_sizes=TINY_SIZES)  # fmt: skip
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    model = SmolTolkForCausalLM.from_pretrained(out).eval()
    assert model.dtype == torch.float32
    assert_every_tensor_placed(checkpoint["model"], model.config, model.state_dict())

    # The text path of the authors' model is their context_model with the first V rows of txt_embed.
    llama = LlamaForCausalLM(LlamaConfig(**TINY_SIZES, tie_word_embeddings=True, max_position_embeddings=BLOCK_SIZE))
    state = {f"model.{k[len('context_model.'):]}": v for k, v in checkpoint["model"].items() if "context_model." in k}
    state["model.embed_tokens.weight"] = checkpoint["model"]["txt_embed.weight"][:V]
    llama.load_state_dict(state, strict=False)  # lm_head is tied to embed_tokens
    llama.eval()
    input_ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, reference = model(input_ids).logits, llama(input_ids).logits
    torch.testing.assert_close(ours[..., :V], reference, atol=1e-5, rtol=0)
    assert torch.isinf(ours[..., V:]).all()  # markers and speech cannot follow a text token


def test_compiled_bf16_checkpoint_converts_bit_for_bit(tmp_path):
    checkpoint = make_authors_checkpoint(dtype=torch.bfloat16, compiled=True)
    out = convert_authors_checkpoint(save(checkpoint, tmp_path), tmp_path / "hf", backbone_sizes=TINY_SIZES)
    model = SmolTolkForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert_every_tensor_placed(checkpoint["model"], model.config, model.state_dict())


def test_baseline_checkpoint_converts_to_plain_vocabulary_expansion(tmp_path):
    checkpoint = make_authors_checkpoint(VARIANTS["baseline"])
    out = convert_authors_checkpoint(save(checkpoint, tmp_path), tmp_path / "hf", backbone_sizes=TINY_SIZES)
    model = SmolTolkForCausalLM.from_pretrained(out)
    assert model.model.layer_pooling is None and len(model.model.input_adapter) == 0
    assert not any("layer_pooling" in k or "adapter" in k for k in model.state_dict())


def test_cli(tmp_path, capsys):
    path = save(make_authors_checkpoint(VARIANTS["no_adapters"]), tmp_path)
    sizes = json.dumps(TINY_SIZES)
    assert cli_convert_authors([str(path), str(tmp_path / "hf"), "--dtype", "float32", "--backbone-sizes", sizes]) == 0
    assert SmolTolkForCausalLM.from_pretrained(tmp_path / "hf").dtype == torch.float32
    # A known-format error is reported as a message and exit status 2, not a traceback.
    assert cli_convert_authors([str(path), str(tmp_path / "other")]) == 2


def test_processor_is_saved_with_the_model(tmp_path, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from smoltolk_hf.processing_smoltolk import SmolTolkProcessor

    backend = Tokenizer(models.WordLevel({f"w{i}": i for i in range(V)}, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0").save_pretrained(tmp_path / "tok")
    out = convert_authors_checkpoint(save(make_authors_checkpoint(), tmp_path), tmp_path / "hf",
                                     text_tokenizer=tmp_path / "tok", backbone_sizes=TINY_SIZES)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == V and tokenizer("w3 w7")["input_ids"] == [3, 7]
    processor = SmolTolkProcessor.from_pretrained(out)
    config = SmolTolkForCausalLM.config_class.from_pretrained(out)
    assert (processor.speech_marker_id, processor.speech_eos_id) == (config.speech_marker_id, config.speech_eos_id)
    assert "text tokenizer has" not in caplog.text  # sizes agree: no warning


def test_pickled_class_is_refused(tmp_path):
    checkpoint = make_authors_checkpoint()
    checkpoint["config"] = _NotPlainData()
    with pytest.raises(ValueError, match="never unpickles code"):
        convert_authors_checkpoint(save(checkpoint, tmp_path), tmp_path / "hf", backbone_sizes=TINY_SIZES)
    assert not (tmp_path / "hf").exists()


def test_unknown_and_missing_tensors_are_named():
    checkpoint = make_authors_checkpoint()
    checkpoint["model"]["audio_in_layers.2.input_layernorm.weight"] = torch.ones(16)  # one layer more than the flags
    del checkpoint["model"]["context_model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError) as err:
        convert_authors_state_dict(checkpoint, backbone_sizes=TINY_SIZES)
    assert "Missing tensors: ['context_model.layers.1.mlp.up_proj.weight']" in str(err.value)
    assert "Unknown tensors: ['audio_in_layers.2.input_layernorm.weight']" in str(err.value)


def test_untied_duplicate_is_refused():
    checkpoint = make_authors_checkpoint()
    checkpoint["model"]["audio_unembed.0.weight"] = checkpoint["model"]["audio_embed.0.weight"] + 1
    with pytest.raises(ValueError, match="audio_unembed.0.weight differs from audio_embed.0.weight"):
        convert_authors_state_dict(checkpoint, backbone_sizes=TINY_SIZES)


def test_wrong_shape_is_refused():
    checkpoint = make_authors_checkpoint()
    checkpoint["model"]["layer_selector.bias"] = torch.zeros(NUM_LAYERS + 1)
    with pytest.raises(ValueError, match="layer_selector.bias -> model.layer_pooling.selector.bias"):
        convert_authors_state_dict(checkpoint, backbone_sizes=TINY_SIZES)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"n_codebooks": 2}, "multi-codebook"),
        ({"selwa_linear": False}, "MLP layer selector"),
        ({"layer_wa_audio": False}, "needs layer_wa_audio=True"),
        ({"txt_vocabsize": V + 4}, "txt_vocabsize=44"),
        ({"swt_token": V}, "swt_token=40, expected 42"),
    ],
)
def test_unsupported_model_args_are_refused(args, message):
    checkpoint = make_authors_checkpoint()
    checkpoint["model_args"].update(args)
    with pytest.raises(ValueError, match=message):
        convert_authors_state_dict(checkpoint, backbone_sizes=TINY_SIZES)


def test_unknown_backbone_lists_known_ones_and_the_way_out():
    with pytest.raises(ValueError) as err:
        convert_authors_state_dict(make_authors_checkpoint())  # backbone="tiny/llama", no sizes given
    assert "HuggingFaceTB/SmolLM-1.7B" in str(err.value) and "backbone_sizes=" in str(err.value)


def test_modeling_script_runs_the_same_converter(tmp_path, monkeypatch, caplog):
    script = Path(__file__).resolve().parents[1] / "modeling" / "convert_authors_checkpoint.py"
    path = save(make_authors_checkpoint(VARIANTS["baseline"]), tmp_path)
    argv = [str(script), str(path), str(tmp_path / "hf"), "--backbone-sizes", json.dumps(TINY_SIZES)]
    monkeypatch.setattr(sys, "argv", argv)
    caplog.set_level(logging.INFO, logger="smoltolk_hf.conversion")
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert "Dropping the bop/eop rows" in caplog.text
    assert SmolTolkForCausalLM.from_pretrained(tmp_path / "hf").dtype == torch.bfloat16


def test_legacy_torch_save_format_converts(tmp_path):
    """Files in the pre-zip torch.save format cannot be memory-mapped; they are read whole instead."""
    path = tmp_path / "legacy.pt"
    torch.save(make_authors_checkpoint(VARIANTS["no_adapters"]), path, _use_new_zipfile_serialization=False)
    convert_authors_checkpoint(path, tmp_path / "hf", backbone_sizes=TINY_SIZES, dtype=torch.float32)
    assert SmolTolkForCausalLM.from_pretrained(tmp_path / "hf").config.num_input_adapter_layers == 0
