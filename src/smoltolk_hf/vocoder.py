"""Unit vocoder: discrete speech units -> 16 kHz waveform.

This is the unit HiFi-GAN with a duration predictor that fairseq, speech-resynthesis and textlesslib call
``CodeHiFiGANVocoder`` / ``CodeGenerator``:

1. a unit embedding table ``dict`` of shape ``(num_embeddings, embedding_dim)``;
2. an optional duration predictor (two conv1d + ReLU + LayerNorm + dropout blocks and a linear head) that predicts
   ``log(1 + duration)`` per unit, used to repeat deduplicated units;
3. the HiFi-GAN generator: ``conv_pre``, a stack of ``ConvTranspose1d`` upsamplers each followed by a
   multi-receptive-field fusion of "ResBlock1" blocks, ``conv_post`` and ``tanh``.

Parameter names match the fairseq state dict so released checkpoints convert with a key-for-key copy. Training used
weight norm; this module is inference-only and stores plain convolution weights, which is what fairseq runs after
its own ``remove_weight_norm()``. :func:`convert_fairseq_vocoder` folds the weight-norm factors once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# HiFi-GAN uses slope 0.1 inside the upsampling stack; the activation before ``conv_post`` is a bare
# ``F.leaky_relu(x)`` in the original code, i.e. PyTorch's default 0.01. Both are reproduced for parity.
_LRELU_SLOPE = 0.1
_LRELU_SLOPE_POST = 0.01

# fairseq config keys for conditioning this vocoder does not implement; a config that enables any is refused.
_UNSUPPORTED_FAIRSEQ_KEYS = ("multispkr", "embedder_params", "multistyle", "f0", "f0_quant_num_bin")


@dataclass
class UnitVocoderConfig:
    """Configuration of a :class:`UnitVocoder`.

    Field names follow the fairseq / speech-resynthesis vocoder JSON. The defaults describe the unit vocoder for
    ``mhubert-base-25hz`` layer-11 k-means-500 units: 500 units at 25 Hz rendered at 16 kHz, i.e. a hop of 640
    samples per unit. The released JSON (``hifigan_lj_mhubert_base_25hz_config.json``) could not be consulted, so
    the upsampling layout is inferred: the speech-resynthesis 50 Hz layout (``[5, 4, 4, 2, 2]`` /
    ``[11, 8, 8, 4, 4]``, hop 320) with one more factor of two. :func:`convert_fairseq_vocoder` always builds the
    config from the released JSON and checks every tensor shape, so these defaults never override a real checkpoint.

    Args:
        num_embeddings: Number of discrete units (k-means clusters).
        embedding_dim: Size of the unit embedding, which is also the generator's input width.
        upsample_rates: Stride of each transposed convolution; their product is the hop length.
        upsample_kernel_sizes: Kernel of each transposed convolution (``kernel - rate`` must be even and >= 0).
        upsample_initial_channel: Channels after ``conv_pre``; halved by every upsampling stage.
        resblock_kernel_sizes: Kernel of each parallel residual block (odd).
        resblock_dilation_sizes: Dilations of each parallel residual block.
        duration_predictor_hidden_dim: Width of the duration predictor, or ``None`` for a vocoder without one.
        duration_predictor_kernel_size: Kernel of the duration predictor convolutions (odd).
        duration_predictor_dropout: Dropout of the duration predictor (only active in training mode).
        sampling_rate: Output sampling rate in Hz.
    """

    num_embeddings: int = 500
    embedding_dim: int = 128
    upsample_rates: list[int] = field(default_factory=lambda: [5, 4, 4, 4, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [11, 8, 8, 8, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    duration_predictor_hidden_dim: int | None = 128
    duration_predictor_kernel_size: int = 3
    duration_predictor_dropout: float = 0.5
    sampling_rate: int = 16000

    model_type = "smoltolk_unit_vocoder"

    def __post_init__(self) -> None:
        self.upsample_rates = [int(v) for v in self.upsample_rates]
        self.upsample_kernel_sizes = [int(v) for v in self.upsample_kernel_sizes]
        self.resblock_kernel_sizes = [int(v) for v in self.resblock_kernel_sizes]
        self.resblock_dilation_sizes = [[int(d) for d in ds] for ds in self.resblock_dilation_sizes]
        positive = {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "upsample_initial_channel": self.upsample_initial_channel,
            "sampling_rate": self.sampling_rate,
            "duration_predictor_kernel_size": self.duration_predictor_kernel_size,
        }
        if self.duration_predictor_hidden_dim is not None:
            positive["duration_predictor_hidden_dim"] = self.duration_predictor_hidden_dim
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.upsample_rates or len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                "upsample_rates and upsample_kernel_sizes must be non-empty and equally long, got "
                f"{self.upsample_rates} and {self.upsample_kernel_sizes}"
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            # padding (kernel - rate) // 2 gives exactly `rate` output samples per input frame only in this case.
            if rate <= 0 or kernel < rate or (kernel - rate) % 2:
                raise ValueError(
                    f"each upsampling stage needs rate > 0 and an even, non-negative kernel - rate; got rate {rate}, "
                    f"kernel {kernel}"
                )
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError(
                f"upsample_initial_channel ({self.upsample_initial_channel}) must be divisible by "
                f"2**{len(self.upsample_rates)} (it is halved by every upsampling stage)"
            )
        if not self.resblock_kernel_sizes or len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError(
                "resblock_kernel_sizes and resblock_dilation_sizes must be non-empty and equally long, got "
                f"{self.resblock_kernel_sizes} and {self.resblock_dilation_sizes}"
            )
        for kernel, dilations in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes):
            if kernel <= 0 or kernel % 2 == 0 or not dilations or any(d <= 0 for d in dilations):
                raise ValueError(
                    f"residual blocks need an odd positive kernel and positive dilations; got kernel {kernel}, "
                    f"dilations {dilations}"
                )
        if self.duration_predictor_kernel_size % 2 == 0:
            raise ValueError(f"duration_predictor_kernel_size must be odd, got {self.duration_predictor_kernel_size}")
        if not 0.0 <= self.duration_predictor_dropout < 1.0:
            raise ValueError(f"duration_predictor_dropout must be in [0, 1), got {self.duration_predictor_dropout}")

    @property
    def hop_length(self) -> int:
        """Output samples per (expanded) unit: the product of ``upsample_rates``."""
        return math.prod(self.upsample_rates)

    @property
    def has_duration_predictor(self) -> bool:
        """Whether the vocoder carries a duration predictor."""
        return self.duration_predictor_hidden_dim is not None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict, tagged with ``model_type``."""
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> UnitVocoderConfig:
        """Build a config from :meth:`to_dict` output; unknown keys raise a ``ValueError``."""
        config = dict(config)
        model_type = config.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(f"expected model_type {cls.model_type!r}, got {model_type!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown UnitVocoderConfig keys: {unknown}")
        return cls(**config)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``config.json`` into ``save_directory`` (created if missing)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> UnitVocoderConfig:
        """Read a config written by :meth:`save_pretrained`."""
        return cls.from_dict(json.loads(Path(json_file).read_text()))

    @classmethod
    def from_fairseq_config(cls, config: dict[str, Any]) -> UnitVocoderConfig:
        """Translate a fairseq / speech-resynthesis vocoder JSON (the file shipped next to ``g_00500000``).

        Raises:
            ValueError: If the JSON is missing required keys or enables conditioning this module lacks
                (speakers, styles, F0, ResBlock2, an input width other than ``embedding_dim``).
        """
        required = (
            "num_embeddings",
            "embedding_dim",
            "upsample_rates",
            "upsample_kernel_sizes",
            "upsample_initial_channel",
            "resblock_kernel_sizes",
            "resblock_dilation_sizes",
        )
        missing = [key for key in required if key not in config]
        if missing:
            raise ValueError(f"fairseq vocoder config is missing keys: {missing}")
        enabled = [key for key in _UNSUPPORTED_FAIRSEQ_KEYS if config.get(key)]
        if enabled:
            raise ValueError(f"unsupported vocoder conditioning in config: {enabled}; only unit-only vocoders convert")
        if str(config.get("resblock", "1")) != "1":
            raise ValueError(f"only HiFi-GAN ResBlock1 is supported, config has resblock={config['resblock']!r}")
        # fairseq feeds the unit embedding straight into conv_pre, whose width defaults to 80 when unset.
        model_in_dim = config.get("model_in_dim", 80)
        if model_in_dim != config["embedding_dim"]:
            raise ValueError(
                f"model_in_dim ({model_in_dim}) must equal embedding_dim ({config['embedding_dim']}) for a "
                "unit-only vocoder"
            )
        duration = config.get("dur_predictor_params") or None
        duration_input = None if duration is None else duration.get("encoder_embed_dim", config["embedding_dim"])
        if duration_input is not None and duration_input != config["embedding_dim"]:
            raise ValueError(
                f"dur_predictor_params.encoder_embed_dim ({duration_input}) must equal "
                f"embedding_dim ({config['embedding_dim']})"
            )
        return cls(
            num_embeddings=config["num_embeddings"],
            embedding_dim=config["embedding_dim"],
            upsample_rates=config["upsample_rates"],
            upsample_kernel_sizes=config["upsample_kernel_sizes"],
            upsample_initial_channel=config["upsample_initial_channel"],
            resblock_kernel_sizes=config["resblock_kernel_sizes"],
            resblock_dilation_sizes=config["resblock_dilation_sizes"],
            duration_predictor_hidden_dim=None if duration is None else duration["var_pred_hidden_dim"],
            duration_predictor_kernel_size=3 if duration is None else duration["var_pred_kernel_size"],
            duration_predictor_dropout=0.5 if duration is None else duration["var_pred_dropout"],
            sampling_rate=config.get("sampling_rate", 16000),
        )


class UnitVocoderOutput(NamedTuple):
    """Batched vocoder output.

    Attributes:
        waveform: ``(batch, max_samples)`` float audio in ``[-1, 1]``, zero after each item's length.
        lengths: ``(batch,)`` number of valid samples per item (expanded units x ``hop_length``).
    """

    waveform: torch.Tensor
    lengths: torch.Tensor


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # Zeroing padded frames after every convolution makes each item see exactly the zero padding it would see
    # alone, so batched output equals per-item output.
    return x if mask is None else x * mask


def _upsample_mask(mask: torch.Tensor | None, rate: int) -> torch.Tensor | None:
    return None if mask is None else mask.repeat_interleave(rate, dim=-1)


class _DurationPredictor(nn.Module):
    """fairseq ``VariancePredictor``: predicts ``log(1 + duration)`` for each unit."""

    def __init__(self, embed_dim: int, hidden_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2
        # nn.Sequential wrappers keep fairseq's "conv1.0.weight" key names.
        self.conv1 = nn.Sequential(nn.Conv1d(embed_dim, hidden_dim, kernel_size, padding=padding), nn.ReLU())
        self.ln1 = nn.LayerNorm(hidden_dim)
        self.conv2 = nn.Sequential(nn.Conv1d(hidden_dim, hidden_dim, kernel_size, padding=padding), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden_dim)
        self.proj = nn.Linear(hidden_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Map ``(B, C, T)`` embeddings to ``(B, T)`` log durations."""
        x = self.dropout(self.ln1(self.conv1(x).transpose(1, 2))).transpose(1, 2)
        x = self.dropout(self.ln2(self.conv2(_masked(x, mask)).transpose(1, 2)))
        return self.proj(x).squeeze(-1)


class _ResBlock(nn.Module):
    """HiFi-GAN "ResBlock1": per dilation, a dilated conv then an undilated conv, with a residual connection."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilations
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            residual = _masked(conv1(F.leaky_relu(x, _LRELU_SLOPE)), mask)
            x = x + _masked(conv2(F.leaky_relu(residual, _LRELU_SLOPE)), mask)
        return x


class UnitVocoder(nn.Module):
    """Unit HiFi-GAN vocoder with an optional duration predictor (fairseq ``CodeGenerator`` layout).

    Build it from a :class:`UnitVocoderConfig`, load it with :meth:`from_pretrained`, or create it once from a
    released fairseq checkpoint with :func:`convert_fairseq_vocoder`. Call ``.eval()`` before synthesis when
    constructing directly (``from_pretrained`` does), otherwise duration-predictor dropout is active.

    Example:
        >>> vocoder = UnitVocoder.from_pretrained("path/to/vocoder")
        >>> waveform, lengths = vocoder(units, dur_prediction=True)
    """

    def __init__(self, config: UnitVocoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dict = nn.Embedding(config.num_embeddings, config.embedding_dim)
        self.dur_predictor = (
            _DurationPredictor(
                config.embedding_dim,
                config.duration_predictor_hidden_dim,
                config.duration_predictor_kernel_size,
                config.duration_predictor_dropout,
            )
            if config.has_duration_predictor
            else None
        )
        channels = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(config.embedding_dim, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2))
            channels //= 2
            for res_kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(_ResBlock(channels, res_kernel, dilations))
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3)
        # As in HiFi-GAN, the upsampling and output convolutions start from N(0, 0.01); the rest keep PyTorch's init.
        for module in (self.ups, self.resblocks, self.conv_post):
            module.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and not module.weight.is_meta:
            nn.init.normal_(module.weight, 0.0, 0.01)

    @property
    def hop_length(self) -> int:
        """Output samples per expanded unit."""
        return self.config.hop_length

    @property
    def sampling_rate(self) -> int:
        """Output sampling rate in Hz."""
        return self.config.sampling_rate

    def check_compatible(self, num_speech_units: int) -> None:
        """Raise a ``ValueError`` unless the vocoder was trained on ``num_speech_units`` units.

        Use it when pairing the vocoder with a speech language model or unit tokenizer.
        """
        if self.config.num_embeddings != num_speech_units:
            raise ValueError(
                f"unit vocoder expects {self.config.num_embeddings} speech units but the model produces "
                f"{num_speech_units}; use a vocoder trained on the same unit inventory"
            )

    def _split_units(
        self, units: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate inputs; return ``(units (B, T), bool mask (B, T))`` with units at padded positions set to 0."""
        if not isinstance(units, torch.Tensor):
            raise TypeError(f"units must be a torch.Tensor, got {type(units).__name__}")
        if units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise ValueError(f"units must be an integer tensor, got dtype {units.dtype}")
        if units.dim() == 1:
            units = units.unsqueeze(0)
            attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
        if units.dim() != 2:
            raise ValueError(f"units must have shape (batch, time) or (time,), got {tuple(units.shape)}")
        if units.numel() == 0:
            raise ValueError(f"units is empty (shape {tuple(units.shape)})")
        if attention_mask is None:
            mask = torch.ones_like(units, dtype=torch.bool)
        else:
            if attention_mask.shape != units.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} does not match units {tuple(units.shape)}"
                )
            mask = attention_mask.to(units.device).bool()
        if not mask.any(dim=1).all():
            raise ValueError("every batch item needs at least one unit; found an item with none")
        valid = units[mask]
        if (valid < 0).any() or (valid >= self.config.num_embeddings).any():
            raise ValueError(
                f"unit ids must lie in [0, {self.config.num_embeddings}), got values in "
                f"[{int(valid.min())}, {int(valid.max())}]"
            )
        return units.masked_fill(~mask, 0), mask

    @staticmethod
    def _compact(units: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move valid positions to the left (handles left or ragged padding); return ``(units, lengths)``."""
        lengths = mask.sum(dim=1)
        # A stable sort on ~mask keeps the valid units in order and pushes padding to the right.
        order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
        return units.gather(1, order)[:, : int(lengths.max())], lengths

    def predict_durations(self, units: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict how many frames each unit lasts: ``clamp(round(exp(log_dur) - 1), min=1)`` as in fairseq.

        Args:
            units: ``(batch, time)`` or ``(time,)`` unit ids.
            attention_mask: Optional ``(batch, time)`` mask, 1 for real units and 0 for padding.

        Returns:
            ``(batch, time)`` long durations aligned with ``units``; 0 at padded positions.
        """
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor; pass durations or dur_prediction=False")
        units, mask = self._split_units(units, attention_mask)
        compact, lengths = self._compact(units, mask)
        compact_mask = torch.arange(compact.shape[1], device=compact.device)[None] < lengths[:, None]
        frame_mask = compact_mask[:, None].to(self.dict.weight.dtype) if units.shape[0] > 1 else None
        embeddings = _masked(self.dict(compact).transpose(1, 2), frame_mask)
        log_durations = self.dur_predictor(embeddings, frame_mask)
        compact_durations = torch.clamp(torch.round(torch.exp(log_durations) - 1).long(), min=1)
        durations = torch.zeros_like(units)
        durations[mask] = compact_durations[compact_mask]
        return durations

    def _generate(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """HiFi-GAN generator: ``(B, C, frames)`` -> ``(B, frames * hop)``."""
        x = _masked(self.conv_pre(x), mask)
        num_kernels = len(self.config.resblock_kernel_sizes)
        for i, (up, rate) in enumerate(zip(self.ups, self.config.upsample_rates)):
            mask = _upsample_mask(mask, rate)
            x = _masked(up(F.leaky_relu(x, _LRELU_SLOPE)), mask)
            blocks = self.resblocks[i * num_kernels : (i + 1) * num_kernels]
            x = sum(block(x, mask) for block in blocks) / num_kernels
        x = torch.tanh(self.conv_post(F.leaky_relu(x, _LRELU_SLOPE_POST)))
        return _masked(x, mask).squeeze(1)

    def forward(
        self,
        units: torch.Tensor,
        durations: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        dur_prediction: bool = False,
    ) -> UnitVocoderOutput:
        """Synthesise audio from units.

        Each unit becomes ``durations[i]`` frames (1 when no durations are given and ``dur_prediction`` is off,
        the right choice for non-deduplicated units); every frame becomes ``hop_length`` samples.

        Args:
            units: ``(batch, time)`` or ``(time,)`` integer unit ids in ``[0, num_embeddings)``.
            durations: Optional non-negative integer frames per unit, same shape as ``units``.
            attention_mask: Optional ``(batch, time)`` mask, 1 for real units and 0 for padding (left, right or
                ragged padding all work; ids at padded positions are ignored).
            dur_prediction: Predict durations with the duration predictor (for deduplicated units).

        Returns:
            :class:`UnitVocoderOutput` ``(waveform, lengths)``: ``waveform`` is ``(batch, max_samples)`` and zero
            beyond ``lengths[b]`` samples. A 1-D input gives a batch of one.

        Raises:
            TypeError: If ``units`` is not a tensor.
            ValueError: On malformed inputs (wrong rank or dtype, empty items, ids out of range, bad durations) or
                when ``dur_prediction`` is requested without a predictor or together with ``durations``.
        """
        if durations is not None and dur_prediction:
            raise ValueError("pass either durations or dur_prediction=True, not both")
        if dur_prediction:
            durations = self.predict_durations(units, attention_mask)
        units, mask = self._split_units(units, attention_mask)
        if durations is None:
            durations = mask.long()
        else:
            if not isinstance(durations, torch.Tensor) or durations.dtype.is_floating_point:
                raise ValueError("durations must be an integer tensor")
            if durations.dim() == 1:
                durations = durations.unsqueeze(0)
            if durations.shape != units.shape:
                raise ValueError(f"durations shape {tuple(durations.shape)} does not match units {tuple(units.shape)}")
            durations = durations.to(units.device).long().masked_fill(~mask, 0)
            if (durations < 0).any():
                raise ValueError("durations must be non-negative")
            if not (durations.sum(dim=1) > 0).all():
                raise ValueError("every batch item needs a positive total duration")
        # Expanding ids (not embeddings) keeps the lookup small; padding gets duration 0 and so disappears.
        expanded = [u.repeat_interleave(d) for u, d in zip(units, durations)]
        frames = torch.tensor([len(e) for e in expanded], device=units.device)
        ids = nn.utils.rnn.pad_sequence(expanded, batch_first=True)
        frame_mask = None
        if ids.shape[0] > 1:
            frame_mask = (torch.arange(ids.shape[1], device=ids.device)[None] < frames[:, None])[:, None]
            frame_mask = frame_mask.to(self.dict.weight.dtype)
        x = _masked(self.dict(ids).transpose(1, 2), frame_mask)
        return UnitVocoderOutput(self._generate(x, frame_mask), frames * self.hop_length)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``save_directory``."""
        self.config.save_pretrained(save_directory)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(Path(save_directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> UnitVocoder:
        """Load a vocoder saved by :meth:`save_pretrained` from a local directory or a Hub repo id.

        The model is returned in eval mode.
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            config_file, weights_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        else:
            repo_id = str(pretrained_model_name_or_path)
            config_file = hf_hub_download(repo_id, CONFIG_NAME, revision=revision)
            weights_file = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision)
        with torch.device("meta"):
            model = cls(UnitVocoderConfig.from_json_file(config_file))
        state = load_file(str(weights_file), device=str(map_location))
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()


# (magnitude suffix, direction suffix) of old-style ``torch.nn.utils.weight_norm`` and of the parametrization API.
_WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def _fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every weight-norm (magnitude, direction) pair with the plain ``weight`` it parametrises."""
    folded: dict[str, torch.Tensor] = {}
    consumed: set[str] = set()
    for g_suffix, v_suffix in _WEIGHT_NORM_SUFFIXES:
        for g_key in [key for key in state if key.endswith(g_suffix)]:
            prefix = g_key[: -len(g_suffix)]
            v_key = prefix + v_suffix
            if v_key not in state:
                raise ValueError(f"weight-norm magnitude {g_key!r} has no matching direction {v_key!r}")
            g, v = state[g_key].double(), state[v_key].double()
            # The norm runs over every axis along which g is broadcast; torch's default (dim=0) keeps axis 0.
            reduce_dims = [d for d in range(v.dim()) if g.dim() != v.dim() or g.shape[d] == 1]
            weight = g * v / torch.linalg.vector_norm(v, dim=reduce_dims, keepdim=True)
            folded[prefix + ".weight"] = weight.to(state[v_key].dtype)
            consumed.update((g_key, v_key))
    for key, tensor in state.items():
        if key in consumed:
            continue
        if key.endswith(tuple(v_suffix for _, v_suffix in _WEIGHT_NORM_SUFFIXES)):
            raise ValueError(f"weight-norm direction {key!r} has no matching magnitude")
        folded[key] = tensor
    return folded


def convert_fairseq_vocoder(
    checkpoint_path: str | os.PathLike,
    config_json_path: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> UnitVocoder:
    """Convert a released fairseq / textlesslib unit HiFi-GAN into a :class:`UnitVocoder` directory.

    The checkpoint (e.g. ``g_00500000`` or ``hifigan_lj_mhubert_base_25hz.pt``: a dict whose ``"generator"`` entry
    is the state dict) is read with ``torch.load(..., weights_only=True)`` only, so no pickled code ever runs.
    Weight norm is folded into plain weights; every key and shape must match the architecture built from the JSON.

    Args:
        checkpoint_path: The released generator checkpoint.
        config_json_path: The vocoder JSON released with it.
        out_dir: Directory to write ``config.json`` and ``model.safetensors`` to.

    Returns:
        The converted model, in eval mode.

    Raises:
        ValueError: If the file needs arbitrary unpickling, lacks a generator state dict, or its keys or shapes do
            not match the config (the offending keys are named).
    """
    config = UnitVocoderConfig.from_fairseq_config(json.loads(Path(config_json_path).read_text()))
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{checkpoint_path} cannot be loaded with weights_only=True (it contains pickled Python objects beyond "
            "tensors and containers); refusing to unpickle it. Re-save only the generator state dict from a "
            "trusted environment."
        ) from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("generator"), dict):
        state = checkpoint["generator"]
    elif isinstance(checkpoint, dict) and checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{checkpoint_path} holds no generator state dict (found {found})")
    state = _fold_weight_norm(state)

    model = UnitVocoder(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the vocoder config: missing keys {missing}, unexpected keys {unexpected}"
        )
    mismatched = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs config {tuple(expected[key].shape)}"
        for key in expected
        if state[key].shape != expected[key].shape
    ]
    if mismatched:
        raise ValueError("checkpoint shapes do not match the vocoder config: " + "; ".join(mismatched))
    model.load_state_dict({key: state[key].float() for key in expected}, strict=True)
    model.eval()
    model.save_pretrained(out_dir)
    return model
