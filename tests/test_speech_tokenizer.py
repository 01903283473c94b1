"""SpeechTokenizer: units against a direct computation, batching, resampling, persistence, bad input."""

import os
import shutil

import joblib
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly
from sklearn.cluster import KMeans
from transformers import HubertConfig, HubertModel

from smoltolk_hf.tokenization_speech import HubertFrontEnd, MfccFrontEnd, SpeechTokenizer, deduplicate_units

N_UNITS = 16


def tiny_hubert(norm: str, frame_rate: int = 50, seed: int = 0) -> HubertModel:
    """HuBERT-base layout (group norm, post-LN encoder) or HuBERT-large layout (layer norm, pre-LN)."""
    kernels, strides = [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]
    if frame_rate == 25:
        kernels, strides = kernels + [2], strides + [2]
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=[32] * len(kernels),
        conv_kernel=kernels,
        conv_stride=strides,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(seed)
    return HubertModel(config).eval()


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory):
    """Real espeak-ng speech (22.05 kHz wav files) with their transcripts."""
    if shutil.which("espeak-ng") is None or not os.path.exists("/usr/share/games/fortunes/fortunes"):
        pytest.skip("needs the Debian packages espeak-ng and fortunes-min to synthesise test speech")
    from smoltolk_hf.demo.corpus import synthesize_corpus

    out = tmp_path_factory.mktemp("speech")
    synthesize_corpus(out, 3, seed=0, sentences_per_utterance=(1, 1))
    return sorted(str(p) for p in (out / "wav").glob("*.wav"))


def _speech_at_16k(path: str) -> np.ndarray:
    wave, rate = sf.read(path, dtype="float32")
    assert rate == 22050
    return resample_poly(wave, 320, 441).astype(np.float32)


def _hubert_tokenizer(norm: str, audio, layer: int = 1, **kwargs) -> SpeechTokenizer:
    return SpeechTokenizer.train(audio, N_UNITS, HubertFrontEnd(tiny_hubert(norm), layer=layer), **kwargs)


@pytest.fixture(scope="module")
def hubert_tokenizers(speech_corpus):
    """A codebook per HuBERT kind, fitted on real speech (fitted once: k-means dominates test time)."""
    return {norm: _hubert_tokenizer(norm, speech_corpus) for norm in ("group", "layer")}


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_units_match_direct_computation(speech_corpus, hubert_tokenizers, norm):
    tokenizer = hubert_tokenizers[norm]
    model = tokenizer.frontend.model
    units, durations = tokenizer(speech_corpus, return_durations=True)
    for path, got, got_durations in zip(speech_corpus, units, durations):
        with torch.no_grad():
            hidden = model(torch.from_numpy(_speech_at_16k(path))[None], output_hidden_states=True).hidden_states[1][0]
        distances = torch.cdist(hidden.double(), tokenizer.centroids.double())
        frames = distances.argmin(-1).numpy()
        expected, expected_durations = deduplicate_units(frames)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got_durations, expected_durations)
        assert got_durations.sum() == len(frames) and (np.diff(got) != 0).all()
    assert len(np.unique(np.concatenate(units))) > N_UNITS // 2  # real speech uses much of the codebook


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_batch_equals_one_by_one(speech_corpus, hubert_tokenizers, norm):
    rng = np.random.default_rng(0)
    audio = speech_corpus + [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (400, 7_777, 20_000)]
    tokenizer = hubert_tokenizers[norm]
    batched = tokenizer(audio, deduplicate=False, batch_size=4)
    for item, units in zip(audio, batched):
        np.testing.assert_array_equal(units, tokenizer(item, deduplicate=False))
    assert len(batched[3]) == 1  # 400 samples: exactly one 50 Hz frame


def test_layers_above_the_output_layer_do_not_run(speech_corpus, hubert_tokenizers):
    frontend = hubert_tokenizers["group"].frontend
    assert frontend.layer == 1 < frontend.model.config.num_hidden_layers
    calls = []
    hook = frontend.model.encoder.layers[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        frontend([_speech_at_16k(speech_corpus[0])])
    finally:
        hook.remove()
    assert calls == []


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_bf16_autocast_keeps_nearly_all_units(speech_corpus, hubert_tokenizers, norm):
    tokenizer = hubert_tokenizers[norm]
    fp32 = np.concatenate(tokenizer(speech_corpus, deduplicate=False))
    features = tokenizer.extract_features(speech_corpus)
    tokenizer.frontend.autocast_dtype = torch.bfloat16
    try:
        bf16 = np.concatenate(tokenizer(speech_corpus, deduplicate=False))
        bf16_features = tokenizer.extract_features(speech_corpus)
    finally:
        tokenizer.frontend.autocast_dtype = None
    assert all(f.dtype == torch.float32 for f in bf16_features)
    # bf16 keeps 8 significant bits: features move by about 1%, only frames near a unit boundary change.
    for got, expected in zip(bf16_features, features):
        assert ((got - expected).norm(dim=-1) / expected.norm(dim=-1)).max() < 0.05
        assert not torch.equal(got, expected)
    assert len(bf16) == len(fp32) and (bf16 == fp32).mean() > 0.95  # 99.6% measured (1 frame of 254)


def test_frame_rate_follows_conv_strides():
    assert HubertFrontEnd(tiny_hubert("group"), layer=1).frame_rate == 50.0
    frontend = HubertFrontEnd(tiny_hubert("group", frame_rate=25), layer=1)
    assert frontend.frame_rate == 25.0 and frontend.hop_length == 640
    tokenizer = SpeechTokenizer(np.random.default_rng(0).standard_normal((N_UNITS, 32)), frontend)
    assert len(tokenizer(np.zeros(32_000, np.float32) + 0.01, deduplicate=False)) == frontend.num_frames(32_000) == 49
    assert MfccFrontEnd().frame_rate == 25.0


def test_resampling_and_channels(speech_corpus, hubert_tokenizers, tmp_path):
    tokenizer = hubert_tokenizers["group"]
    path = speech_corpus[0]
    wave, rate = sf.read(path, dtype="float32")
    assert rate == 22050
    from_file = tokenizer(path)
    np.testing.assert_array_equal(from_file, tokenizer(wave, sampling_rate=22050))
    np.testing.assert_array_equal(from_file, tokenizer(_speech_at_16k(path)))
    np.testing.assert_array_equal(from_file, tokenizer(torch.from_numpy(wave), sampling_rate=22050))
    # 8 kHz input: same units as that audio upsampled to 16 kHz, and about as many frames as the original.
    narrow = resample_poly(wave, 80, 221).astype(np.float32)
    units_8k = tokenizer(narrow, sampling_rate=8000, deduplicate=False)
    np.testing.assert_array_equal(
        units_8k, tokenizer(resample_poly(narrow, 2, 1).astype(np.float32), deduplicate=False)
    )
    assert abs(len(units_8k) - len(tokenizer(path, deduplicate=False))) <= 1
    # Stereo files and (channels, samples) / (samples, channels) arrays are mixed down.
    stereo = np.stack([wave, 0.5 * wave], axis=1)
    sf.write(tmp_path / "stereo.flac", stereo, rate)
    mono = tokenizer(stereo.mean(axis=1), sampling_rate=rate)
    np.testing.assert_array_equal(
        tokenizer(str(tmp_path / "stereo.flac")),
        tokenizer(sf.read(tmp_path / "stereo.flac", dtype="float32")[0].mean(1), sampling_rate=rate),
    )
    np.testing.assert_array_equal(tokenizer(stereo, sampling_rate=rate), mono)
    np.testing.assert_array_equal(tokenizer(stereo.T, sampling_rate=rate), mono)


def test_int16_pcm_is_scaled():
    tokenizer = SpeechTokenizer.train(
        [np.random.default_rng(0).uniform(-0.5, 0.5, 16_000).astype(np.float32)], N_UNITS, MfccFrontEnd()
    )
    pcm = (np.random.default_rng(1).uniform(-0.5, 0.5, 16_000) * 32768).astype(np.int16)
    np.testing.assert_array_equal(tokenizer(pcm), tokenizer(pcm.astype(np.float32) / 32768))


@pytest.mark.parametrize("frontend", ["hubert", "mfcc"])
def test_save_load_round_trip(tmp_path, frontend):
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16_000, 24_000)]
    frontend = HubertFrontEnd(tiny_hubert("layer"), layer=2) if frontend == "hubert" else MfccFrontEnd()
    centroids = rng.standard_normal((N_UNITS, frontend.feature_dim))
    tokenizer = SpeechTokenizer(centroids, frontend, max_chunk_seconds=30.0, deduplicate=False)
    tokenizer.save_pretrained(tmp_path)
    loaded = SpeechTokenizer.from_pretrained(tmp_path)
    assert loaded.to_config() == tokenizer.to_config()
    assert loaded.max_chunk_seconds == tokenizer.max_chunk_seconds and loaded.deduplicate is tokenizer.deduplicate
    torch.testing.assert_close(loaded.centroids, tokenizer.centroids, rtol=0, atol=0)
    for got, expected in zip(loaded(audio), tokenizer(audio)):
        np.testing.assert_array_equal(got, expected)


def test_chunking_only_over_the_limit(speech_corpus, hubert_tokenizers):
    tokenizer = hubert_tokenizers["layer"]
    wave = _speech_at_16k(speech_corpus[0])
    seconds = len(wave) / 16_000
    whole = tokenizer(wave, deduplicate=False)
    at_limit = SpeechTokenizer(tokenizer.centroids, tokenizer.frontend, max_chunk_seconds=seconds)
    np.testing.assert_array_equal(at_limit(wave, deduplicate=False), whole)
    chunked = SpeechTokenizer(tokenizer.centroids, tokenizer.frontend, max_chunk_seconds=0.5)
    pieces = chunked._chunks(wave)
    assert len(pieces) > 1 and all(len(p) <= 8_000 for p in pieces[:-1])
    units = chunked(wave, deduplicate=False)
    assert len(units) == sum(tokenizer.frontend.num_frames(len(p)) for p in pieces)
    first = tokenizer.frontend.num_frames(len(pieces[0]))
    assert (units[: first // 2] == whole[: first // 2]).mean() > 0.5  # same frame grid, mostly the same units


def test_kmeans_file_import_needs_opt_in(tmp_path):
    features = np.random.default_rng(0).standard_normal((200, 32)).astype(np.float32)
    kmeans = KMeans(n_clusters=N_UNITS, n_init=1, random_state=0).fit(features)
    joblib.dump(kmeans, tmp_path / "km.bin")
    frontend = HubertFrontEnd(tiny_hubert("group"), layer=2)
    with pytest.raises(ValueError, match="arbitrary code"):
        SpeechTokenizer.from_kmeans_file(tmp_path / "km.bin", frontend)
    tokenizer = SpeechTokenizer.from_kmeans_file(tmp_path / "km.bin", frontend, allow_pickle=True)
    np.testing.assert_array_equal(tokenizer.centroids.numpy(), kmeans.cluster_centers_.astype(np.float32))
    tokenizer.save_pretrained(tmp_path / "converted")
    assert sorted(os.listdir(tmp_path / "converted")) == [
        "centroids.safetensors",
        "hubert",
        "speech_tokenizer_config.json",
    ]
    with pytest.raises(ValueError, match="dimension 32 .* 20-dimensional"):
        SpeechTokenizer.from_kmeans_file(tmp_path / "km.bin", MfccFrontEnd(), allow_pickle=True)


@pytest.fixture(scope="module")
def mfcc_tokenizer():
    return SpeechTokenizer(np.random.default_rng(0).standard_normal((N_UNITS, 20)), MfccFrontEnd())


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(500, np.float32), "shorter than one frame"),
        (np.array([0.1] * 2000 + [np.nan], np.float32), "NaN or infinite"),
        (np.array([0.1] * 2000 + [np.inf], np.float32), "NaN or infinite"),
        (np.zeros((2, 2, 2000), np.float32), "3 dimensions"),
        (np.zeros((16, 2000), np.float32), "multi-channel"),
        (np.zeros(2000, np.int64), "int16 or int32"),
        ("not/a/file.wav", None),
        (3.0, "path, numpy array or torch tensor"),
    ],
)
def test_bad_input(mfcc_tokenizer, audio, message):
    if message is None:
        with pytest.raises(FileNotFoundError):
            mfcc_tokenizer(audio)
    else:
        with pytest.raises(ValueError, match=message):
            mfcc_tokenizer(audio)


def test_bad_file_and_batch_index(mfcc_tokenizer, tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio")
    with pytest.raises(ValueError, match="unknown or unsupported format"):
        mfcc_tokenizer(str(tmp_path / "notes.wav"))
    good = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    with pytest.raises(ValueError, match=r"audio\[2\]: .*NaN"):
        mfcc_tokenizer([good, good, np.full(4000, np.nan, np.float32)])
    with pytest.raises(ValueError, match="centroids must have shape"):
        SpeechTokenizer(np.zeros(20), MfccFrontEnd())
    with pytest.raises(ValueError, match="layer must be in"):
        HubertFrontEnd(tiny_hubert("group"), layer=3)
    with pytest.raises(ValueError, match="autocast_dtype must be a floating torch.dtype"):
        HubertFrontEnd(tiny_hubert("group"), layer=1, autocast_dtype="bf16")
