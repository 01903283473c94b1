"""Tests for the unit HiFi-GAN vocoder (random weights, tiny sizes)."""

import copy
import json
import warnings

import pytest
import torch
from helpers import NUM_UNITS, tiny_vocoder, tiny_vocoder_config

from smoltolk_hf.vocoder import (
    UnitVocoder,
    UnitVocoderConfig,
    UnitVocoderOutput,
    convert_fairseq_vocoder,
)


@pytest.fixture(scope="module")
def vocoder() -> UnitVocoder:
    return tiny_vocoder()


def test_output_length_is_units_times_hop(vocoder):
    units = torch.randint(0, NUM_UNITS, (2, 9))
    with torch.inference_mode():
        out = vocoder(units)
    assert isinstance(out, UnitVocoderOutput)
    assert vocoder.hop_length == 6
    assert out.waveform.shape == (2, 9 * 6)
    assert out.lengths.tolist() == [54, 54]
    assert out.waveform.abs().max() <= 1.0 and out.waveform.abs().max() > 1e-3


def test_one_dimensional_input_is_a_batch_of_one(vocoder):
    units = torch.randint(0, NUM_UNITS, (5,))
    with torch.inference_mode():
        waveform, lengths = vocoder(units)
        batched, _ = vocoder(units[None])
    assert waveform.shape == (1, 30) and lengths.tolist() == [30]
    torch.testing.assert_close(waveform, batched)


def test_explicit_durations_set_length(vocoder):
    units = torch.tensor([[3, 4, 5], [6, 7, 8]])
    durations = torch.tensor([[1, 2, 3], [0, 4, 1]])
    with torch.inference_mode():
        waveform, lengths = vocoder(units, durations=durations)
        repeated, _ = vocoder(torch.tensor([3, 4, 4, 5, 5, 5]))
    assert lengths.tolist() == [6 * 6, 5 * 6]
    assert waveform.shape == (2, 36)
    assert torch.all(waveform[1, 30:] == 0)
    # Durations repeat units, so they equal vocoding the explicitly repeated sequence.
    torch.testing.assert_close(waveform[0], repeated[0], atol=1e-5, rtol=0)


def test_predicted_durations_path(vocoder):
    units = torch.randint(0, NUM_UNITS, (1, 12))
    with torch.inference_mode():
        durations = vocoder.predict_durations(units)
        waveform, lengths = vocoder(units, dur_prediction=True)
        reference, _ = vocoder(units, durations=durations)
    assert durations.dtype == torch.long and durations.min() >= 1
    assert len(set(durations.flatten().tolist())) > 1, "test weights should give varied durations"
    assert lengths.item() == durations.sum().item() * vocoder.hop_length
    torch.testing.assert_close(waveform, reference)


def test_batched_equals_single_with_padding(vocoder):
    torch.manual_seed(1)
    units = torch.randint(0, NUM_UNITS, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, 6:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    units[mask == 0] = -1  # padded ids are ignored, even if out of range
    with torch.inference_mode():
        for dur_prediction in (False, True):
            waveform, lengths = vocoder(units, attention_mask=mask, dur_prediction=dur_prediction)
            for i in range(3):
                single, single_len = vocoder(units[i][mask[i].bool()], dur_prediction=dur_prediction)
                assert lengths[i] == single_len[0]
                torch.testing.assert_close(waveform[i, : lengths[i]], single[0], atol=1e-5, rtol=0)
                assert torch.all(waveform[i, lengths[i] :] == 0)


def test_save_load_round_trip(tmp_path, vocoder):
    vocoder.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "smoltolk_unit_vocoder"
    loaded = UnitVocoder.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.config == vocoder.config
    units = torch.randint(0, NUM_UNITS, (2, 7))
    with torch.inference_mode():
        for dur_prediction in (False, True):
            expected = vocoder(units, dur_prediction=dur_prediction)
            actual = loaded(units, dur_prediction=dur_prediction)
            assert torch.equal(expected.waveform, actual.waveform)
            assert torch.equal(expected.lengths, actual.lengths)


def test_from_pretrained_hub_id_downloads_both_files(tmp_path, vocoder, monkeypatch):
    vocoder.save_pretrained(tmp_path)
    calls = []

    def fake_download(repo_id, filename, revision=None):
        calls.append((repo_id, filename, revision))
        return str(tmp_path / filename)

    monkeypatch.setattr("smoltolk_hf.vocoder.hf_hub_download", fake_download)
    loaded = UnitVocoder.from_pretrained("org/unit-vocoder", revision="v1")
    assert calls == [("org/unit-vocoder", "config.json", "v1"), ("org/unit-vocoder", "model.safetensors", "v1")]
    assert loaded.config == vocoder.config


def test_vocoder_without_duration_predictor(tmp_path):
    model = tiny_vocoder(duration_predictor_hidden_dim=None)
    assert model.dur_predictor is None
    assert not any(key.startswith("dur_predictor") for key in model.state_dict())
    model.save_pretrained(tmp_path)
    assert UnitVocoder.from_pretrained(tmp_path).dur_predictor is None
    with pytest.raises(ValueError, match="no duration predictor"):
        model(torch.tensor([[1, 2]]), dur_prediction=True)


# --- fairseq conversion ---------------------------------------------------------------------------------------


def fairseq_config_json(config: UnitVocoderConfig) -> dict:
    """The released vocoder JSON shape (training-only keys included, as in the real files)."""
    return {
        "resblock": "1",
        "num_gpus": 1,
        "batch_size": 16,
        "learning_rate": 0.0002,
        "upsample_rates": config.upsample_rates,
        "upsample_kernel_sizes": config.upsample_kernel_sizes,
        "upsample_initial_channel": config.upsample_initial_channel,
        "resblock_kernel_sizes": config.resblock_kernel_sizes,
        "resblock_dilation_sizes": config.resblock_dilation_sizes,
        "num_embeddings": config.num_embeddings,
        "embedding_dim": config.embedding_dim,
        "model_in_dim": config.embedding_dim,
        "segment_size": 8960,
        "code_hop_size": config.hop_length,
        "f0": False,
        "num_mels": 80,
        "dur_prediction_weight": 1.0,
        "dur_predictor_params": {
            "encoder_embed_dim": config.embedding_dim,
            "var_pred_hidden_dim": config.duration_predictor_hidden_dim,
            "var_pred_kernel_size": config.duration_predictor_kernel_size,
            "var_pred_dropout": config.duration_predictor_dropout,
        },
        "sampling_rate": config.sampling_rate,
        "dist_config": {"dist_backend": "nccl", "dist_url": "env://"},
    }


def fairseq_state_dict(model: UnitVocoder, style: str = "old") -> dict:
    """The generator state dict as training saves it: torch weight norm on every generator convolution.

    ``old`` is ``torch.nn.utils.weight_norm`` (``weight_g``/``weight_v``, what fairseq used); ``new`` is
    ``torch.nn.utils.parametrizations.weight_norm``.
    """
    model = copy.deepcopy(model)
    convs = [
        module
        for name, module in model.named_modules()
        if name.startswith(("conv_pre", "ups", "resblocks", "conv_post"))
        and isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))
    ]
    for conv in convs:
        if style == "old":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated, but it is what the checkpoints hold
                torch.nn.utils.weight_norm(conv)
        else:
            torch.nn.utils.parametrizations.weight_norm(conv)
        with torch.no_grad():  # any positive rescaling of v parametrises the same weight
            if style == "old":
                conv.weight_v.mul_(1.7)
            else:
                conv.parametrizations.weight.original1.mul_(1.7)
    return {key: tensor.detach().clone() for key, tensor in model.state_dict().items()}


def write_fairseq_files(tmp_path, model, state=None, checkpoint=None):
    ckpt_path, json_path = tmp_path / "g_00500000", tmp_path / "config.json"
    if checkpoint is None:
        checkpoint = {"generator": state if state is not None else fairseq_state_dict(model), "steps": 500000}
    torch.save(checkpoint, ckpt_path)
    json_path.write_text(json.dumps(fairseq_config_json(model.config)))
    return ckpt_path, json_path


@pytest.mark.parametrize("style", ["old", "new"])
def test_convert_fairseq_checkpoint_matches_direct_model(tmp_path, vocoder, style):
    state = fairseq_state_dict(vocoder, style)
    assert any(key.endswith("weight_g" if style == "old" else "original0") for key in state)
    ckpt, cfg = write_fairseq_files(tmp_path, vocoder, state)
    converted = convert_fairseq_vocoder(ckpt, cfg, tmp_path / "out")
    assert converted.config == vocoder.config
    reloaded = UnitVocoder.from_pretrained(tmp_path / "out")
    units = torch.randint(0, NUM_UNITS, (2, 8))
    with torch.inference_mode():
        expected = vocoder(units, dur_prediction=True)
        for model in (converted, reloaded):
            actual = model(units, dur_prediction=True)
            assert torch.equal(actual.lengths, expected.lengths)
            torch.testing.assert_close(actual.waveform, expected.waveform, atol=1e-5, rtol=0)


class TrainerState:
    """Stand-in for arbitrary objects saved next to the generator; loading it needs full unpickling."""


def test_convert_refuses_pickled_objects(tmp_path, vocoder):
    checkpoint = {"generator": fairseq_state_dict(vocoder), "trainer": TrainerState()}
    ckpt, cfg = write_fairseq_files(tmp_path, vocoder, checkpoint=checkpoint)
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_fairseq_vocoder(ckpt, cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_convert_names_missing_and_unexpected_keys(tmp_path, vocoder):
    state = fairseq_state_dict(vocoder)
    del state["dur_predictor.proj.bias"]
    state["spkr.weight"] = torch.zeros(4, 8)
    ckpt, cfg = write_fairseq_files(tmp_path, vocoder, state)
    expected = r"missing keys \['dur_predictor.proj.bias'\].*unexpected keys \['spkr.weight'\]"
    with pytest.raises(ValueError, match=expected):
        convert_fairseq_vocoder(ckpt, cfg, tmp_path / "out")


def test_convert_names_shape_mismatch(tmp_path, vocoder):
    state = fairseq_state_dict(vocoder)
    state["dict.weight"] = torch.zeros(NUM_UNITS + 1, 8)
    ckpt, cfg = write_fairseq_files(tmp_path, vocoder, state)
    with pytest.raises(ValueError, match=r"dict.weight: checkpoint \(21, 8\) vs config \(20, 8\)"):
        convert_fairseq_vocoder(ckpt, cfg, tmp_path / "out")


def test_convert_refuses_unsupported_conditioning(tmp_path, vocoder):
    ckpt, cfg = write_fairseq_files(tmp_path, vocoder)
    config = json.loads(cfg.read_text())
    config["multispkr"] = "from_input_file"
    cfg.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="multispkr"):
        convert_fairseq_vocoder(ckpt, cfg, tmp_path / "out")


# --- validation -----------------------------------------------------------------------------------------------


def test_non_tensor_units_raise_type_error(vocoder):
    with pytest.raises(TypeError, match="torch.Tensor"):
        vocoder([1, 2, 3])


def test_check_compatible(vocoder):
    vocoder.check_compatible(NUM_UNITS)
    with pytest.raises(ValueError, match="expects 20 speech units but the model produces 500"):
        vocoder.check_compatible(500)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": torch.zeros(1, 0, dtype=torch.long)}, "empty"),
        ({"units": torch.tensor([[1, NUM_UNITS]])}, r"\[0, 20\)"),
        ({"units": torch.tensor([[-1, 2]])}, r"\[0, 20\)"),
        ({"units": torch.zeros(1, 2, 3, dtype=torch.long)}, "shape"),
        ({"units": torch.tensor(3)}, "shape"),
        ({"units": torch.zeros(1, 4)}, "integer"),
        ({"units": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[0, 0]])}, "at least one unit"),
        ({"units": torch.tensor([[1, 2]]), "attention_mask": torch.tensor([[1, 1, 1]])}, "attention_mask shape"),
        ({"units": torch.tensor([[1, 2]]), "durations": torch.tensor([[1, 2, 3]])}, "durations shape"),
        ({"units": torch.tensor([[1, 2]]), "durations": torch.tensor([[1, -1]])}, "non-negative"),
        ({"units": torch.tensor([[1, 2]]), "durations": torch.tensor([[0, 0]])}, "positive total"),
        ({"units": torch.tensor([[1, 2]]), "durations": torch.tensor([[1.0, 2.0]])}, "integer"),
        ({"units": torch.tensor([[1, 2]]), "durations": torch.tensor([[1, 2]]), "dur_prediction": True}, "either"),
    ],
)
def test_bad_inputs_raise_value_error(vocoder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        vocoder(**kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"upsample_rates": [2, 3], "upsample_kernel_sizes": [4]}, "equally long"),
        ({"upsample_kernel_sizes": [5, 7]}, "even"),
        ({"upsample_initial_channel": 18}, "divisible"),
        ({"resblock_kernel_sizes": [3, 4]}, "odd"),
        ({"num_embeddings": 0}, "positive"),
    ],
)
def test_bad_config_raises_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_vocoder_config(**overrides)


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    config = tiny_vocoder_config()
    config.save_pretrained(tmp_path)
    assert UnitVocoderConfig.from_json_file(tmp_path / "config.json") == config
    with pytest.raises(ValueError, match="unknown UnitVocoderConfig keys: \\['bogus'\\]"):
        UnitVocoderConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_default_config_matches_25hz_km500_vocoder_size():
    config = UnitVocoderConfig()
    assert (config.num_embeddings, config.sampling_rate, config.hop_length) == (500, 16000, 640)
    with torch.device("meta"):
        model = UnitVocoder(config)
    assert all(p.is_meta for p in model.parameters())

    # Independent count of the fairseq CodeGenerator layout (plain weights, i.e. after remove_weight_norm).
    def conv(c_in, c_out, k):
        return c_in * c_out * k + c_out

    e, h, k_dur = config.embedding_dim, config.duration_predictor_hidden_dim, config.duration_predictor_kernel_size
    expected = config.num_embeddings * e
    expected += conv(e, h, k_dur) + conv(h, h, k_dur) + 2 * (2 * h) + (h + 1)
    channels = config.upsample_initial_channel
    expected += conv(e, channels, 7)
    for kernel in config.upsample_kernel_sizes:
        expected += conv(channels, channels // 2, kernel)
        channels //= 2
        for res_kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
            expected += 2 * len(dilations) * conv(channels, channels, res_kernel)
    expected += conv(channels, 1, 7)
    assert sum(p.numel() for p in model.parameters()) == expected == 13_419_202
