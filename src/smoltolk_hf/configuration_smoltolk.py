"""SmolTolk model configuration.

A `SmolTolkConfig` is the backbone's `LlamaConfig` (all fields keep their meaning, `vocab_size` stays the
text vocabulary size) plus the speech additions of the paper: input/output speech adapters, dynamic
multi-level layer pooling, the speech input residual and the selector entropy regulariser.

Joint id layout (one `input_ids` space for text and speech), with `V = vocab_size`, `N = num_speech_units`:

| ids                    | meaning                                               |
|------------------------|-------------------------------------------------------|
| `[0, V)`               | text tokens of the backbone tokenizer                 |
| `V`, `V + 1`           | modality markers `<|text|>` and `<|speech|>`          |
| `[V + 2, V + 2 + N)`   | speech units                                          |
| `V + 2 + N`            | speech end-of-utterance (also used as speech BOS)     |
| `V + 3 + N`            | speech pad                                            |
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig

# Backbone sizes of paper Table 4 (SmolLM family). `bos`/`eos` are the SmolLM tokenizer's `<|endoftext|>`.
_SMOLLM_BACKBONES: dict[str, dict[str, Any]] = {
    "135m": dict(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576, intermediate_size=1536),
    "360m": dict(num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5, hidden_size=960, intermediate_size=2560),
    "1.7b": dict(num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32, hidden_size=2048, intermediate_size=8192),
}
_SMOLLM_SHARED: dict[str, Any] = dict(
    vocab_size=49152,
    max_position_embeddings=2048,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
    bos_token_id=0,
    eos_token_id=0,
    hidden_act="silu",
)
_BASELINE_SWITCHES: dict[str, Any] = dict(
    num_input_adapter_layers=0,
    num_output_adapter_layers=0,
    use_layer_pooling=False,
    use_dynamic_pooling=False,
    use_speech_residual=False,
    entropy_beta=0.0,
)
# `pooling_norm` values: "none" is the authors' architecture (raw layer outputs pooled, nothing normalised);
# "rmsnorm" RMS-normalises every pooled layer output and gives the pooled state one gain (docs/diagnosis.md, issue 11).
POOLING_NORMS = ("none", "rmsnorm")
# What new models get (`from_text_model`, the smoltolk presets). The config class itself defaults to "none", so a
# config.json saved before the field existed loads with the architecture it was trained with.
NEW_MODEL_POOLING_NORM = "rmsnorm"
# Multiplier of the speech-table lookups (the tied speech head reads the table unscaled). 1.0 is the authors'
# architecture; new models get 10: fresh rows at std 0.02 are otherwise a sixth of the backbone's text embeddings
# (RMS ~0.12), too small for the backbone to read the current unit (docs/training.md, issue 11).
NEW_MODEL_SPEECH_EMBEDDING_SCALE = 10.0
_NEW_MODEL_SWITCHES: dict[str, Any] = dict(speech_embedding_scale=NEW_MODEL_SPEECH_EMBEDDING_SCALE)
_SMOLTOLK_SWITCHES: dict[str, Any] = dict(pooling_norm=NEW_MODEL_POOLING_NORM, **_NEW_MODEL_SWITCHES)
# Paper section 4.1: RoPE base raised from 10,000 to 100,000; beta = 0.01 for the two larger models.
PRESETS: dict[str, dict[str, Any]] = {
    "smoltolk-150m": dict(backbone="135m", rope_theta=100_000.0, entropy_beta=0.0, **_SMOLTOLK_SWITCHES),
    "smoltolk-400m": dict(backbone="360m", rope_theta=100_000.0, entropy_beta=0.01, **_SMOLTOLK_SWITCHES),
    "smoltolk-2b": dict(backbone="1.7b", rope_theta=100_000.0, entropy_beta=0.01, **_SMOLTOLK_SWITCHES),
    "baseline-135m": dict(backbone="135m", rope_theta=100_000.0, **_BASELINE_SWITCHES, **_NEW_MODEL_SWITCHES),
    "baseline-360m": dict(backbone="360m", rope_theta=100_000.0, **_BASELINE_SWITCHES, **_NEW_MODEL_SWITCHES),
    "baseline-1.7b": dict(backbone="1.7b", rope_theta=100_000.0, **_BASELINE_SWITCHES, **_NEW_MODEL_SWITCHES),
}


# Fields that describe a config's own class and origin, never a model's architecture.
_IDENTITY_FIELDS = ("model_type", "architectures", "auto_map", "transformers_version")


def shared_fields(source: PreTrainedConfig, target: type[PreTrainedConfig]) -> dict[str, Any]:
    """The fields of `source` that `target` also declares, without the identity fields (model_type, auto_map, ...)."""
    return {
        key: value
        for key, value in source.to_dict().items()
        if key in target.__dataclass_fields__ and key not in _IDENTITY_FIELDS
    }


# Keys transformers itself writes into config.json that are not dataclass fields of the config.
_SAVED_EXTRA_KEYS = ("auto_map",)
# The speech fields' types, checked in `SmolTolkConfig.__post_init__` (a bool is not accepted as an int).
_SPEECH_FIELD_TYPES: dict[str, type] = {
    "num_speech_units": int,
    "num_input_adapter_layers": int,
    "num_output_adapter_layers": int,
    "use_layer_pooling": bool,
    "use_dynamic_pooling": bool,
    "use_speech_residual": bool,
    "entropy_beta": float,
    "pooling_norm": str,
    "speech_embedding_scale": float,
}


def closest_name_hint(name: str, valid: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the valid name closest to a misspelt `name` (difflib), or `""` if none is close."""
    matches = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


class JointIdLayout:
    """
    The joint id layout, computed from `vocab_size` (text vocabulary `V`) and `num_speech_units` (`N`). Shared by the
    config and the processor so that the id arithmetic lives in one place.
    """

    @property
    def text_marker_id(self) -> int:
        """Id of `<|text|>`: the next token is text."""
        return self.vocab_size

    @property
    def speech_marker_id(self) -> int:
        """Id of `<|speech|>`: the next token is speech."""
        return self.vocab_size + 1

    @property
    def speech_token_offset(self) -> int:
        """Joint id of speech unit 0."""
        return self.vocab_size + 2

    @property
    def speech_eos_id(self) -> int:
        """Speech end-of-utterance (also speech BOS)."""
        return self.speech_token_offset + self.num_speech_units

    @property
    def speech_pad_id(self) -> int:
        """Speech pad: kept so the authors' 502-row speech tables convert losslessly; never a target."""
        return self.speech_token_offset + self.num_speech_units + 1

    @property
    def speech_vocab_size(self) -> int:
        """Rows of the tied speech embedding/unembedding matrix: units, eos and pad."""
        return self.num_speech_units + 2

    @property
    def joint_vocab_size(self) -> int:
        """Size of the joint id space (and of the last dimension of generation logits)."""
        return self.speech_pad_id + 1


@strict
class SmolTolkConfig(JointIdLayout, LlamaConfig):
    r"""
    Configuration of a SmolTolk text-speech language model: a Llama-architecture text LM (the backbone) extended
    with a speech-unit vocabulary, speech adapters and dynamic layer pooling.

    All [`LlamaConfig`] fields describe the backbone and keep their meaning (`vocab_size` is the text vocabulary).

    Args:
        num_speech_units (`int`, defaults to 500):
            Size of the speech-unit codebook (HuBERT k-means units).
        num_input_adapter_layers (`int`, defaults to 2):
            Decoder layers composing each contiguous speech span before the backbone (0 disables the adapter).
        num_output_adapter_layers (`int`, defaults to 2):
            Decoder layers refining the pooled representation before the speech head (0 disables the adapter).
        use_layer_pooling (`bool`, defaults to `True`):
            Pool all backbone layers for the speech head; if `False` the speech head reads the last layer only.
        use_dynamic_pooling (`bool`, defaults to `True`):
            Input-dependent layer weights from the selector `S`; if `False` only the static weights `phi` are used.
        use_speech_residual (`bool`, defaults to `True`):
            Add the raw input embedding to the pooled representation (paper Eq. 5).
        entropy_beta (`float`, defaults to 0.0):
            Weight of the selector entropy bonus (paper Eq. 6): `loss -= entropy_beta * mean_entropy(omega)`.
        pooling_norm (`str`, defaults to `"none"`):
            Normalisation of the pooled layer outputs (needs `use_layer_pooling`). `"none"`: the authors'
            architecture, the raw backbone layer outputs (the last one after the final norm) are pooled. `"rmsnorm"`:
            each of the `num_hidden_layers` pooled outputs is divided by its root mean square (per position, as
            RMSNorm does) before pooling, and the pooled state gets one learnable gain (initialised to 1), so the
            selector and the speech head start from unit-scale inputs whatever the backbone's activation scale. New
            models (`SmolTolkForCausalLM.from_text_model`, the `smoltolk-*` presets) get `"rmsnorm"`; the class
            default `"none"` keeps configs saved without this field (and the authors' converted checkpoints) on the
            architecture they were trained with.
        speech_embedding_scale (`float`, defaults to 1.0):
            Multiplier of the speech-table lookups at the input (the input adapter's input and the residual of
            Eq. 5); the tied speech head reads the table unscaled. `1.0` is the authors' architecture. New models
            (`from_text_model`, the presets, baselines included) get `NEW_MODEL_SPEECH_EMBEDDING_SCALE` (10): fresh
            speech rows (std `initializer_range`, 0.02) are otherwise far smaller than the backbone's trained text
            embeddings, and the backbone barely sees which unit it is reading.

    The config is strict: an unknown field (a keyword argument, a key of config.json or of the training YAML's model
    overrides) raises a `ValueError` that suggests the closest field, and the speech fields above are type-checked
    (`"false"` is not a bool, `"20"` not an int). Keys transformers writes itself (`auto_map`, ...) load as usual.

    The joint id layout is exposed through read-only properties: `text_marker_id`, `speech_marker_id`,
    `speech_token_offset`, `speech_eos_id`, `speech_pad_id`, `joint_vocab_size`.
    """

    model_type = "smoltolk"

    num_speech_units: int = 500
    num_input_adapter_layers: int = 2
    num_output_adapter_layers: int = 2
    use_layer_pooling: bool = True
    use_dynamic_pooling: bool = True
    use_speech_residual: bool = True
    entropy_beta: float = 0.0
    pooling_norm: str = "none"
    speech_embedding_scale: float = 1.0

    def __post_init__(self, **kwargs):
        fields = type(self).__dataclass_fields__
        valid = sorted(name for name in fields if not name.startswith("_"))
        for key in kwargs:
            attribute = getattr(type(self), key, None)
            if isinstance(attribute, property) and attribute.fset is None:
                raise ValueError(
                    f"SmolTolkConfig got {key}={kwargs[key]!r}, but {key} is computed from vocab_size and "
                    "num_speech_units; it cannot be set."
                )
        super().__post_init__(**kwargs)
        # What transformers does not consume (legacy keys, generation defaults, attn_implementation, ...) it sets
        # as a plain attribute: for a SmolTolk config that is a misspelt field, so it is refused.
        unknown = [
            key
            for key in kwargs
            if key not in fields and key in vars(self) and key not in _SAVED_EXTRA_KEYS and not key.startswith("_")
        ]
        if unknown:
            raise ValueError(
                "SmolTolkConfig got unknown field(s): "
                + ", ".join(f"{key!r}{closest_name_hint(key, valid)}" for key in unknown)
                + ". Fix the name (in the keyword arguments, the training YAML's model overrides or config.json)."
            )
        for name, expected in _SPEECH_FIELD_TYPES.items():
            value = getattr(self, name)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))  # an integer weight (`entropy_beta: 0`) is exactly that float
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ValueError(
                    f"SmolTolkConfig.{name} must be {'an' if expected is int else 'a'} "
                    f"{expected.__name__}, got {value!r} ({type(value).__name__})"
                    + (". In YAML or JSON write true/false without quotes." if expected is bool else ".")
                )
        if self.num_speech_units < 1:
            raise ValueError(f"num_speech_units must be >= 1, got {self.num_speech_units}.")
        for name in ("num_input_adapter_layers", "num_output_adapter_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables the adapter), got {getattr(self, name)}.")
        if self.use_dynamic_pooling and not self.use_layer_pooling:
            raise ValueError(
                "use_dynamic_pooling=True needs use_layer_pooling=True: the selector weights the backbone layers. "
                "For the 'no layer pooling' ablation set use_dynamic_pooling=False as well."
            )
        if self.pooling_norm not in POOLING_NORMS:
            raise ValueError(
                f"pooling_norm must be one of {list(POOLING_NORMS)}, got {self.pooling_norm!r}"
                f"{closest_name_hint(self.pooling_norm, POOLING_NORMS)}."
            )
        if self.pooling_norm != "none" and not self.use_layer_pooling:
            raise ValueError(
                f"pooling_norm={self.pooling_norm!r} normalises the pooled layer outputs, but use_layer_pooling=False "
                "(the speech head reads the last layer, already after the final norm). Set pooling_norm='none'."
            )
        if not 0 < self.speech_embedding_scale < float("inf"):
            raise ValueError(
                f"speech_embedding_scale must be a positive finite number, got {self.speech_embedding_scale}."
            )
        if self.entropy_beta < 0:
            raise ValueError(f"entropy_beta must be >= 0 (it weights an entropy bonus), got {self.entropy_beta}.")
        if self.entropy_beta > 0 and not self.use_dynamic_pooling:
            raise ValueError(
                "entropy_beta > 0 regularises the dynamic layer selector, which is off (use_dynamic_pooling=False). "
                "Set entropy_beta=0.0 or enable dynamic pooling."
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id ({self.pad_token_id}) must be a text id in [0, vocab_size={self.vocab_size}): "
                "padding is fed through the text path."
            )

    @property
    def num_total_layers(self) -> int:
        """Decoder layers in all: input adapter + backbone + output adapter (each needs its own KV-cache slot)."""
        return self.num_input_adapter_layers + self.num_hidden_layers + self.num_output_adapter_layers

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PreTrainedConfig:
        """
        As [`PreTrainedConfig.get_text_config`], except on the decoder side (`decoder=True`), which cache builders
        read: there it returns a `LlamaConfig` for the whole stack of decoder layers that keep keys and values, the
        backbone's `num_hidden_layers` plus the adapter layers (`num_total_layers`), all with the backbone's
        attention sizes. So `DynamicCache(config=config)`, `StaticCache(config=config, ...)` and the caches
        `generate()` builds have a slot for every layer. Everything else (this config's `num_hidden_layers`, the
        weights) still describes the backbone.
        """
        if decoder and not encoder:
            return LlamaConfig(**{**shared_fields(self, LlamaConfig), "num_hidden_layers": self.num_total_layers})
        return super().get_text_config(decoder=decoder, encoder=encoder)

    # ----- presets -------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "SmolTolkConfig":
        """
        Builds the configuration of a paper model: `"smoltolk-150m"`, `"smoltolk-400m"`, `"smoltolk-2b"` (SmolTolk on
        the SmolLM-135M/360M/1.7B backbones of paper Table 4) or `"baseline-135m"`, `"baseline-360m"`,
        `"baseline-1.7b"` (plain vocabulary expansion). Keyword arguments override any field.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
        preset = dict(PRESETS[name])
        backbone = _SMOLLM_BACKBONES[preset.pop("backbone")]
        rope_theta = preset.pop("rope_theta")
        fields: dict[str, Any] = {
            **_SMOLLM_SHARED,
            **backbone,
            "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
            **preset,
        }
        fields.update(overrides)
        return cls(**fields)


def smollm_backbone_sizes(name: str) -> dict[str, Any]:
    """Sizes of a SmolLM backbone (`"135m"`, `"360m"` or `"1.7b"`) as `LlamaConfig` fields, with no download."""
    if name not in _SMOLLM_BACKBONES:
        raise ValueError(f"Unknown SmolLM backbone {name!r}; known: {sorted(_SMOLLM_BACKBONES)}.")
    return {**_SMOLLM_SHARED, **_SMOLLM_BACKBONES[name]}


__all__ = [
    "JointIdLayout",
    "SmolTolkConfig",
    "PRESETS",
    "POOLING_NORMS",
    "NEW_MODEL_POOLING_NORM",
    "NEW_MODEL_SPEECH_EMBEDDING_SCALE",
    "shared_fields",
    "smollm_backbone_sizes",
]
