"""Speech tokenizer: audio -> discrete speech units (HuBERT features quantised with k-means).

This follows TWIST / textlesslib: features are the hidden states of one HuBERT layer
(mHuBERT-base-25hz, layer 11, 500 k-means units, 25 Hz), each frame is mapped to its nearest
k-means centroid and adjacent repeats are collapsed. An MFCC front end (no pretrained weights
needed) stands in for HuBERT where none is available offline; see `MfccFrontEnd`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from scipy.fft import dct
from scipy.signal import resample_poly
from tqdm.auto import tqdm
from transformers import HubertModel
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

SAMPLING_RATE = 16000
CONFIG_NAME = "speech_tokenizer_config.json"
CENTROIDS_NAME = "centroids.safetensors"
HUBERT_SUBFOLDER = "hubert"

AudioItem = np.ndarray | torch.Tensor | str | os.PathLike
AudioInput = AudioItem | Sequence[AudioItem]

# Integer PCM is scaled to [-1, 1) by the full scale of its type.
_PCM_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}
_MAX_CHANNELS = 8
# Float audio is in [-1, 1]; a little more happens (resampling, gain), integer PCM stored as floats reaches 32767.
_MAX_FLOAT_PEAK = 8.0
# Sampling rates a waveform can plausibly have; a smaller one (e.g. 1) would be resampled into hours of audio.
_MIN_SAMPLING_RATE, _MAX_SAMPLING_RATE = 4_000, 384_000


class _StopForward(Exception):
    """Raised by a forward hook to end a forward pass once the wanted layer has run."""


class HubertFrontEnd:
    """Frame features from one hidden layer of a transformers `HubertModel`.

    Args:
        model: the HuBERT model (any `HubertConfig`; its conv strides set the frame rate).
        layer: 1-based transformer layer whose output is used (`hidden_states[layer]` of
            `HubertModel.forward`), e.g. 11 for TWIST's mHuBERT-base-25hz.
        normalize: zero-mean / unit-variance normalise each waveform first (what HuBERT-large
            style checkpoints with `do_normalize=True` expect; base models do not).
        autocast_dtype: run HuBERT under `torch.autocast` with this dtype (`torch.bfloat16`: matmuls
            and convolutions in bf16, normalisations in fp32), e.g. on CPUs with AMX or on GPUs.
            Faster, but a frame near the boundary of two units can change unit: see
            docs/speech_tokenizer.md for the measured agreement. `None` (default) computes in the
            model's own dtype.

    Only the layers up to `layer` run: the later ones cannot change its output.
    """

    kind = "hubert"

    def __init__(
        self, model: HubertModel, layer: int, normalize: bool = False, autocast_dtype: torch.dtype | None = None
    ):
        if not 1 <= layer <= model.config.num_hidden_layers:
            raise ValueError(f"layer must be in [1, {model.config.num_hidden_layers}], got {layer}")
        if autocast_dtype is not None and not (
            isinstance(autocast_dtype, torch.dtype) and autocast_dtype.is_floating_point
        ):
            raise ValueError(
                f"autocast_dtype must be a floating torch.dtype such as torch.bfloat16, got {autocast_dtype!r}"
            )
        self.model = model.eval()
        self.layer = layer
        self.normalize = normalize
        self.autocast_dtype = autocast_dtype

    @property
    def hop_length(self) -> int:
        """Input samples per output frame (the product of the conv strides)."""
        return math.prod(self.model.config.conv_stride)

    @property
    def frame_rate(self) -> float:
        return SAMPLING_RATE / self.hop_length

    @property
    def min_samples(self) -> int:
        """Receptive field of one output frame: the shortest input giving one frame."""
        samples = 1
        for kernel, stride in reversed(list(zip(self.model.config.conv_kernel, self.model.config.conv_stride))):
            samples = (samples - 1) * stride + kernel
        return samples

    @property
    def feature_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> HubertFrontEnd:
        self.model.to(device)
        return self

    def num_frames(self, num_samples: int) -> int:
        return int(self.model._get_feat_extract_output_lengths(num_samples))

    @torch.inference_mode()
    def __call__(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        """Features `[frames, feature_dim]` for each 16 kHz mono waveform, computed as one batch."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            hidden, lengths = self._forward([torch.from_numpy(self._normalize(w)) for w in waves])
        hidden = hidden.float()
        return [hidden[i, :n] for i, n in enumerate(lengths)]

    def _forward(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Padded `[batch, frames, hidden]` output of layer `self.layer` and the frames of each input."""
        model = self.model
        inputs = [w.to(self.device, model.dtype) for w in waves]
        if model.config.feat_extract_norm == "group":
            # The first conv's GroupNorm normalises over the whole input, so padding would change
            # every frame: run the conv encoder per utterance and batch only the transformer.
            convs = [model.feature_extractor(x[None])[0].transpose(0, 1) for x in inputs]
        else:
            # Layer-norm conv encoders are frame-local: frames whose receptive field lies inside
            # the audio do not see the padding.
            batch = torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True)
            padded = model.feature_extractor(batch).transpose(1, 2)
            convs = [padded[i, : self.num_frames(len(x))] for i, x in enumerate(inputs)]
        lengths = [len(c) for c in convs]
        conv = torch.nn.utils.rnn.pad_sequence(convs, batch_first=True)
        frame_mask = (
            torch.arange(conv.shape[1], device=self.device)[None] < torch.tensor(lengths, device=self.device)[:, None]
        )

        captured = {}

        def capture(module: torch.nn.Module, args: Any, output: Any) -> None:
            captured["hidden"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward  # skips the layers above `self.layer`

        hook = model.encoder.layers[self.layer - 1].register_forward_hook(capture)
        try:
            # Right padding is exact for the encoder: padded frames are zeroed before the
            # positional conv (same as its own zero padding) and masked in attention.
            model.encoder(model.feature_projection(conv), attention_mask=frame_mask)
        except _StopForward:
            pass
        finally:
            hook.remove()
        return captured["hidden"], lengths

    def _normalize(self, wave: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return wave
        return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)

    def to_config(self) -> dict[str, Any]:
        return {"frontend": self.kind, "layer": self.layer, "normalize_audio": self.normalize}

    def save(self, directory: str) -> None:
        self.model.save_pretrained(os.path.join(directory, HUBERT_SUBFOLDER))

    @classmethod
    def load(cls, directory: str, config: dict[str, Any]) -> HubertFrontEnd:
        model = HubertModel.from_pretrained(os.path.join(directory, HUBERT_SUBFOLDER))
        return cls(model, layer=config["layer"], normalize=config["normalize_audio"])


class MfccFrontEnd:
    """Offline stand-in for HuBERT: MFCCs at 25 Hz (transformers' mel spectrogram + scipy DCT).

    No pretrained HuBERT installs without network access; this front end lets the same
    tokenizer be trained and run anywhere. Units from it are acoustic rather than phonetic,
    so use it for plumbing, tests and demos, not for models meant to be compared with TWIST.
    Frames are computed without centering, so a frame never looks past the end of the audio.
    """

    kind = "mfcc"

    def __init__(
        self, hop_length: int = 640, win_length: int = 800, n_fft: int = 1024, n_mels: int = 80, n_mfcc: int = 20
    ):
        if not hop_length <= win_length <= n_fft:
            raise ValueError(f"need hop_length <= win_length <= n_fft, got {hop_length}, {win_length}, {n_fft}")
        self.hop_length, self.win_length, self.n_fft, self.n_mels, self.n_mfcc = (
            hop_length,
            win_length,
            n_fft,
            n_mels,
            n_mfcc,
        )
        self._window = window_function(win_length, "hann", frame_length=n_fft)
        self._mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=SAMPLING_RATE / 2,
            sampling_rate=SAMPLING_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self._device = torch.device("cpu")

    @property
    def frame_rate(self) -> float:
        return SAMPLING_RATE / self.hop_length

    @property
    def min_samples(self) -> int:
        return self.n_fft

    @property
    def feature_dim(self) -> int:
        return self.n_mfcc

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: str | torch.device) -> MfccFrontEnd:
        self._device = torch.device(device)
        return self

    def num_frames(self, num_samples: int) -> int:
        return (num_samples - self.n_fft) // self.hop_length + 1

    def __call__(self, waves: list[np.ndarray]) -> list[torch.Tensor]:
        features = []
        for wave in waves:
            log_mel = spectrogram(
                wave,
                self._window,
                frame_length=self.n_fft,
                hop_length=self.hop_length,
                power=2.0,
                center=False,
                mel_filters=self._mel_filters,
                log_mel="log10",
            )  # [n_mels, frames]
            mfcc = dct(log_mel, type=2, axis=0, norm="ortho")[: self.n_mfcc]
            features.append(torch.from_numpy(np.ascontiguousarray(mfcc.T, dtype=np.float32)).to(self._device))
        return features

    def to_config(self) -> dict[str, Any]:
        return {
            "frontend": self.kind,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "n_mfcc": self.n_mfcc,
        }

    def save(self, directory: str) -> None:
        """Nothing to save beyond the config."""

    @classmethod
    def load(cls, directory: str, config: dict[str, Any]) -> MfccFrontEnd:
        return cls(**{k: config[k] for k in ("hop_length", "win_length", "n_fft", "n_mels", "n_mfcc")})


FrontEnd = HubertFrontEnd | MfccFrontEnd
_FRONT_ENDS = {HubertFrontEnd.kind: HubertFrontEnd, MfccFrontEnd.kind: MfccFrontEnd}


def load_audio(item: AudioItem, sampling_rate: int | None = None) -> np.ndarray:
    """Returns `item` as a finite float32 mono waveform at 16 kHz.

    `item` is a file path (any format libsndfile reads; its own sample rate is used) or a
    1-D / 2-D array or tensor at `sampling_rate` (default 16 kHz). 2-D input is multi-channel
    audio, `(channels, samples)` or `(samples, channels)` (the shorter axis, at most 8, is the
    channel axis) and is averaged to mono. int16 and int32 PCM are scaled to [-1, 1).
    """
    if isinstance(item, (str, os.PathLike)):
        if not os.path.isfile(item):
            raise FileNotFoundError(f"no audio file at {item!r}")
        try:
            wave, sampling_rate = sf.read(item, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"cannot read {item!r} as audio (unknown or unsupported format): {error}") from error
        wave = wave.T  # (channels, samples)
    elif isinstance(item, torch.Tensor):
        # numpy has no bfloat16: half-precision audio is widened to float32, which is exact.
        wave = item.detach().cpu()
        wave = (wave.float() if wave.dtype in (torch.bfloat16, torch.float16) else wave).numpy()
    elif isinstance(item, np.ndarray):
        wave = item
    else:
        raise ValueError(f"audio must be a path, numpy array or torch tensor, got {type(item).__name__}")  # noqa: TRY004 (all bad input is a ValueError naming its batch index)

    if wave.dtype in _PCM_SCALE:
        wave = wave.astype(np.float32) / _PCM_SCALE[wave.dtype]
    elif not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"audio must be floating point, int16 or int32 PCM, got dtype {wave.dtype}")
    if wave.ndim == 2:
        channel_axis = int(np.argmin(wave.shape))
        if wave.shape[channel_axis] > _MAX_CHANNELS:
            raise ValueError(
                f"2-D audio of shape {wave.shape} is read as multi-channel audio with at most {_MAX_CHANNELS} "
                "channels; pass a batch as a list of 1-D waveforms"
            )
        wave = wave.mean(axis=channel_axis)
    elif wave.ndim != 1:
        raise ValueError(f"audio must be 1-D (mono) or 2-D (multi-channel), got {wave.ndim} dimensions")
    if wave.size == 0:
        raise ValueError("audio is empty")
    if not np.isfinite(wave).all():
        raise ValueError("audio contains NaN or infinite samples")
    peak = float(np.abs(wave).max())
    if peak > _MAX_FLOAT_PEAK:
        raise ValueError(
            f"float audio must lie in [-1, 1], got a peak of {peak:g}: this looks like integer PCM stored as floats; "
            "divide it by 32768 (16-bit) or pass it as an int16 array"
        )

    sampling_rate = SAMPLING_RATE if sampling_rate is None else int(sampling_rate)
    if not _MIN_SAMPLING_RATE <= sampling_rate <= _MAX_SAMPLING_RATE:
        raise ValueError(
            f"sampling_rate={sampling_rate} Hz is outside [{_MIN_SAMPLING_RATE}, {_MAX_SAMPLING_RATE}]: it is the rate "
            "of the samples passed (e.g. 16000, 22050, 44100); the audio is resampled to 16 kHz"
        )
    if sampling_rate != SAMPLING_RATE:
        gcd = math.gcd(SAMPLING_RATE, sampling_rate)
        wave = resample_poly(wave, SAMPLING_RATE // gcd, sampling_rate // gcd)
    return np.ascontiguousarray(wave, dtype=np.float32)


def deduplicate_units(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapses adjacent repeats: returns the units and how many frames each one lasted."""
    if len(units) == 0:
        return units, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, units[1:] != units[:-1]])
    return units[starts], np.diff(np.r_[starts, len(units)])


def _is_batch(audio: AudioInput) -> bool:
    return isinstance(audio, (list, tuple))


class SpeechTokenizer:
    """Audio -> speech units: frame features from a front end, nearest k-means centroid, repeats collapsed.

    Args:
        centroids: `[n_units, feature_dim]` k-means centroids.
        frontend: a `HubertFrontEnd` (the default choice whenever a HuBERT model is available)
            or the offline `MfccFrontEnd`.
        deduplicate: collapse adjacent repeated units by default (TWIST does).
        max_chunk_seconds: audio longer than this is encoded in consecutive chunks of at most
            this length (as textlesslib does, 100 s) to bound memory; shorter audio never is.

    Example:
        >>> tokenizer = SpeechTokenizer(centroids, HubertFrontEnd(hubert, layer=11))
        >>> units, durations = tokenizer(["a.wav", "b.flac"], return_durations=True)
    """

    def __init__(
        self,
        centroids: torch.Tensor | np.ndarray,
        frontend: FrontEnd,
        deduplicate: bool = True,
        max_chunk_seconds: float = 100.0,
    ):
        centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(f"centroids must have shape [n_units, feature_dim], got {tuple(centroids.shape)}")
        if centroids.shape[1] != frontend.feature_dim:
            raise ValueError(
                f"k-means centroids have dimension {centroids.shape[1]} but the {frontend.kind} front end "
                f"gives {frontend.feature_dim}-dimensional features (wrong layer or model?)"
            )
        bad_rows = torch.nonzero(~torch.isfinite(centroids).all(dim=1)).flatten().tolist()
        if bad_rows:
            raise ValueError(
                f"k-means centroids hold NaN or infinite values in {len(bad_rows)} of {len(centroids)} units "
                f"(units {bad_rows[:8]}{' ...' if len(bad_rows) > 8 else ''}); every frame would map to one unit. "
                "The codebook is corrupt: fit it again (smoltolk train-speech-tokenizer) or restore the file."
            )
        self.frontend = frontend
        self.centroids = centroids.to(frontend.device)
        self.deduplicate = deduplicate
        self.max_chunk_seconds = float(max_chunk_seconds)
        # Chunks are cut on frame boundaries so each one starts on the whole-audio frame grid.
        hop = frontend.hop_length
        self._chunk_samples = max(int(self.max_chunk_seconds * SAMPLING_RATE) // hop * hop, hop)
        if self._chunk_samples < frontend.min_samples:
            raise ValueError(f"max_chunk_seconds={max_chunk_seconds} is shorter than one frame")

    @property
    def n_units(self) -> int:
        return len(self.centroids)

    @property
    def frame_rate(self) -> float:
        """Feature frames (units before deduplication) per second."""
        return self.frontend.frame_rate

    @property
    def sampling_rate(self) -> int:
        """Rate the front end runs at; inputs at other rates are resampled to it."""
        return SAMPLING_RATE

    @property
    def device(self) -> torch.device:
        return self.centroids.device

    def to(self, device: str | torch.device) -> SpeechTokenizer:
        self.frontend.to(device)
        self.centroids = self.centroids.to(device)
        return self

    def __call__(
        self,
        audio: AudioInput,
        sampling_rate: int | None = None,
        deduplicate: bool | None = None,
        return_durations: bool = False,
        batch_size: int = 8,
    ) -> Any:
        """Tokenizes one waveform or a batch (list) of them.

        Args:
            audio: a path, a 1-D/2-D float array or tensor, or a list of these (see `load_audio`).
            sampling_rate: rate of array inputs (default 16 kHz); files use their own rate.
            deduplicate: collapse adjacent repeats (default: the tokenizer's setting).
            return_durations: also return the frames each unit lasted (all ones without deduplication).
            batch_size: utterances (or chunks) run through the front end together.

        Returns:
            int64 unit ids in `[0, n_units)`: one array for a single input, a list for a batch;
            with `return_durations`, a `(units, durations)` pair of those.
        """
        is_batch = _is_batch(audio)
        waves = self._load_batch(audio if is_batch else [audio], sampling_rate)
        frames = self._encode(waves, batch_size, progress=False, quantize=True)
        deduplicate = self.deduplicate if deduplicate is None else deduplicate
        if deduplicate:
            pairs = [deduplicate_units(u) for u in frames]
        else:
            pairs = [(u, np.ones_like(u)) for u in frames]
        units = [u for u, _ in pairs]
        durations = [d for _, d in pairs]
        if not is_batch:
            units, durations = units[0], durations[0]
        return (units, durations) if return_durations else units

    def extract_features(self, audio: AudioInput, sampling_rate: int | None = None, batch_size: int = 8) -> Any:
        """Front-end features `[frames, feature_dim]` (float32, on the tokenizer's device) per input."""
        is_batch = _is_batch(audio)
        features = self._encode(
            self._load_batch(audio if is_batch else [audio], sampling_rate), batch_size, False, False
        )
        return features if is_batch else features[0]

    def quantize(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest-centroid ids for `[..., feature_dim]` features (squared Euclidean distance)."""
        # argmin_k |x - c_k|^2 = argmin_k (|c_k|^2 - 2 x.c_k): |x|^2 does not change the winner.
        centroids = self.centroids
        scores = (centroids * centroids).sum(-1) - 2 * features.to(centroids) @ centroids.T
        return scores.argmin(-1)

    def _load_batch(self, items: Sequence[AudioItem], sampling_rate: int | None) -> list[np.ndarray]:
        waves = []
        for index, item in enumerate(items):
            try:
                wave = load_audio(item, sampling_rate)
                if len(wave) < self.frontend.min_samples:
                    raise ValueError(
                        f"audio is {len(wave)} samples at 16 kHz, shorter than one frame ({self.frontend.min_samples})"
                    )
            except ValueError as error:
                raise ValueError(f"audio[{index}]: {error}" if len(items) > 1 else str(error)) from error
            waves.append(wave)
        return waves

    def _chunks(self, wave: np.ndarray) -> list[np.ndarray]:
        if len(wave) <= self._chunk_samples:
            return [wave]
        starts = list(range(0, len(wave), self._chunk_samples))
        if len(wave) - starts[-1] < self.frontend.min_samples:
            starts.pop()  # a tail shorter than one frame joins the previous chunk
        return [wave[s:e] for s, e in zip(starts, starts[1:] + [len(wave)])]

    def _encode(self, waves: list[np.ndarray], batch_size: int, progress: bool, quantize: bool) -> list[Any]:
        """Chunks, batches (longest first, to limit padding), runs the front end, reassembles."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        pieces = [(owner, chunk) for owner, wave in enumerate(waves) for chunk in self._chunks(wave)]
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1]))
        outputs: list[Any] = [None] * len(pieces)
        for start in tqdm(range(0, len(order), batch_size), desc="speech features", disable=not progress):
            batch = order[start : start + batch_size]
            features = self.frontend([pieces[i][1] for i in batch])
            if quantize:
                padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
                ids = self.quantize(padded).cpu().numpy()
                features = [ids[j, : len(f)] for j, f in enumerate(features)]
            for i, value in zip(batch, features):
                outputs[i] = value
        per_owner: list[list[Any]] = [[] for _ in waves]
        for (owner, _), value in zip(pieces, outputs):
            per_owner[owner].append(value)
        if quantize:
            return [np.concatenate(parts).astype(np.int64) for parts in per_owner]
        return [torch.cat(parts) for parts in per_owner]

    # --- persistence -----------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        return {
            **self.frontend.to_config(),
            "n_units": self.n_units,
            "feature_dim": self.frontend.feature_dim,
            "sampling_rate": SAMPLING_RATE,
            "frame_rate": self.frame_rate,
            "deduplicate": self.deduplicate,
            "max_chunk_seconds": self.max_chunk_seconds,
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Writes the config (JSON), the centroids (safetensors) and the HuBERT weights (`hubert/`)."""
        save_directory = os.fspath(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        with open(os.path.join(save_directory, CONFIG_NAME), "w") as f:
            json.dump(self.to_config(), f, indent=2)
        save_file({"centroids": self.centroids.cpu().contiguous()}, os.path.join(save_directory, CENTROIDS_NAME))
        self.frontend.save(save_directory)

    @classmethod
    def from_pretrained(
        cls, pretrained_path: str | os.PathLike, device: str | torch.device | None = None, **hub_kwargs: Any
    ) -> SpeechTokenizer:
        """Loads from a folder written by `save_pretrained`, or a Hub repo id (via `snapshot_download`)."""
        directory = os.fspath(pretrained_path)
        if not os.path.isdir(directory):
            from huggingface_hub import snapshot_download

            directory = snapshot_download(directory, **hub_kwargs)
        with open(os.path.join(directory, CONFIG_NAME)) as f:
            config = json.load(f)
        if config.get("frontend") not in _FRONT_ENDS:
            raise ValueError(f"unknown speech tokenizer front end {config.get('frontend')!r} in {directory}")
        frontend = _FRONT_ENDS[config["frontend"]].load(directory, config)
        centroids_path = os.path.join(directory, CENTROIDS_NAME)
        try:
            tokenizer = cls(
                load_file(centroids_path)["centroids"],
                frontend,
                deduplicate=config["deduplicate"],
                max_chunk_seconds=config["max_chunk_seconds"],
            )
        except ValueError as error:
            raise ValueError(f"{centroids_path}: {error}") from error
        return tokenizer.to(device) if device is not None else tokenizer

    @classmethod
    def from_kmeans_file(
        cls, kmeans_path: str | os.PathLike, frontend: FrontEnd, allow_pickle: bool = False, **kwargs: Any
    ) -> SpeechTokenizer:
        """Imports a textlesslib / fairseq k-means model (a joblib-pickled sklearn `KMeans`).

        Unpickling runs arbitrary code from the file, so it needs `allow_pickle=True`; call
        `save_pretrained` afterwards to keep the centroids as safetensors and never unpickle again.
        """
        if not allow_pickle:
            raise ValueError(
                f"{os.fspath(kmeans_path)!r} is a pickled (joblib) k-means model; unpickling can execute "
                "arbitrary code. Pass allow_pickle=True only for a file you trust, then save_pretrained() "
                "to convert it to safetensors once."
            )
        # In a try block so that transformers' remote-code import check does not demand these optional packages.
        try:
            import joblib
        except ImportError as error:
            raise ImportError("reading a k-means file needs joblib: pip install joblib scikit-learn") from error

        centroids = np.asarray(joblib.load(kmeans_path).cluster_centers_, dtype=np.float32)
        return cls(centroids, frontend, **kwargs)

    @classmethod
    def train(
        cls,
        audio: Sequence[AudioItem],
        n_units: int,
        frontend: FrontEnd,
        sampling_rate: int | None = None,
        max_frames: int | None = None,
        batch_size: int = 8,
        seed: int = 0,
        **kwargs: Any,
    ) -> SpeechTokenizer:
        """Fits a new codebook: MiniBatchKMeans with `n_units` clusters on the front end's features.

        Args:
            audio: the training audio (paths or arrays, as for `__call__`).
            max_frames: randomly subsample at most this many frames before fitting.
            seed: seeds the subsampling and k-means.
            kwargs: passed to the constructor (`deduplicate`, `max_chunk_seconds`).
        """
        try:  # optional dependency, kept out of transformers' remote-code import check
            from sklearn.cluster import MiniBatchKMeans
        except ImportError as error:
            raise ImportError("fitting a codebook needs scikit-learn: pip install scikit-learn") from error

        # A placeholder codebook lets feature extraction reuse the tokenizer's loading and chunking.
        extractor = cls(np.zeros((1, frontend.feature_dim), dtype=np.float32), frontend, **kwargs)
        waves = extractor._load_batch(list(audio), sampling_rate)
        features = torch.cat(extractor._encode(waves, batch_size, progress=True, quantize=False)).cpu().numpy()
        rng = np.random.default_rng(seed)
        if max_frames is not None and len(features) > max_frames:
            features = features[rng.choice(len(features), max_frames, replace=False)]
        if len(features) < n_units:
            raise ValueError(f"{len(features)} feature frames cannot fit {n_units} clusters")
        kmeans = MiniBatchKMeans(n_clusters=n_units, batch_size=max(1024, 3 * n_units), n_init=3, random_state=seed)
        kmeans.fit(features)
        return cls(kmeans.cluster_centers_, frontend, **kwargs)
