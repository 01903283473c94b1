"""
Conversion of the SmolTolk paper authors' released training checkpoints into [`SmolTolkForCausalLM`].

The authors' trainer (nanoGPT/llama2.c style) writes one `.pt` file per checkpoint: a dict with the state dict under
`"model"` and the architecture switches under `"model_args"`. This module reads such a file as plain data only
(`torch.load(weights_only=True)`), maps every tensor to its SmolTolk name, checks that nothing is left over or
missing, and saves a Hugging Face folder (safetensors + config) that loads with `SmolTolkForCausalLM.from_pretrained`.

Name map (their key -> SmolTolk key, `V` = text vocabulary size):

| authors                          | SmolTolk                                                  |
|----------------------------------|-----------------------------------------------------------|
| `context_model.layers.N.*`       | `model.layers.N.*`                                        |
| `context_model.norm.weight`      | `model.norm.weight`                                       |
| `txt_embed.weight[:V]`           | `model.embed_tokens.weight` (and the tied `lm_head`)      |
| `txt_embed.weight[V + 2]` (swt)  | both rows of `model.marker_embed.weight`                  |
| `audio_embed.0.weight`           | `model.speech_embed_tokens.weight` (tied speech head)     |
| `audio_in_layers.N.*`            | `model.input_adapter.N.*`                                 |
| `audio_out_layers.N.*`           | `model.output_adapter.N.*`                                |
| `layer_weights` `(L, 1, 1, 1)`   | `model.layer_pooling.static_weights` `(L,)`               |
| `layer_selector.*`               | `model.layer_pooling.selector.*`                          |

`txt_unembed.weight` and `audio_unembed.0.weight` are tied duplicates: they must equal their embedding bit for bit.
The bop/eop rows of `txt_embed` (ASR/TTS prompt delimiters) have no SmolTolk counterpart and are dropped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .configuration_smoltolk import SmolTolkConfig, smollm_backbone_sizes
from .modeling_smoltolk import SmolTolkForCausalLM

logger = logging.getLogger(__name__)

# Backbone Hub name -> (SmolLM size preset, the backbone's own RoPE base). The authors' code never applied the
# RoPE base named in their configs, so the converted model keeps the backbone's (config.json of each Hub repo).
KNOWN_BACKBONES: dict[str, tuple[str, float]] = {
    "HuggingFaceTB/SmolLM-135M": ("135m", 10_000.0),
    "HuggingFaceTB/SmolLM-360M": ("360m", 10_000.0),
    "HuggingFaceTB/SmolLM-1.7B": ("1.7b", 10_000.0),
    "HuggingFaceTB/SmolLM2-135M": ("135m", 100_000.0),
    "HuggingFaceTB/SmolLM2-360M": ("360m", 100_000.0),
    "HuggingFaceTB/SmolLM2-1.7B": ("1.7b", 130_000.0),
}
_DEFAULT_ROPE_THETA = 10_000.0

# `model_args` entries that only steered training or are checked through the tensors themselves.
_KNOWN_MODEL_ARGS = frozenset(
    {
        "audio_vocabsize", "txt_vocabsize", "block_size", "audio_pad_token", "bop_token", "eop_token", "swt_token",
        "n_codebooks", "tie_audio_embeddings", "backbone", "warm_init", "freeze_backbone", "freeze_txt_inout",
        "n_audio_in_layers", "n_audio_out_layers", "layer_wa_audio", "layer_selwa_audio", "selwa_in_layer",
        "selwa_linear", "raw_speech_residual", "entropy_reg", "torch_dtype", "attn_implementation",
    }
)  # fmt: skip

# (authors' prefix, SmolTolk prefix) for the tensors that move unchanged.
_PREFIX_RULES: tuple[tuple[str, str], ...] = (
    ("context_model.layers.", "model.layers."),
    ("context_model.norm.", "model.norm."),
    ("audio_in_layers.", "model.input_adapter."),
    ("audio_out_layers.", "model.output_adapter."),
    ("layer_selector.", "model.layer_pooling.selector."),
)
# SmolTolk key -> the authors' key it is built from (slices, reshapes and tied copies).
_DERIVED_SOURCES: dict[str, str] = {
    "model.embed_tokens.weight": "txt_embed.weight",
    "lm_head.weight": "txt_unembed.weight",
    "model.marker_embed.weight": "txt_embed.weight",
    "model.speech_embed_tokens.weight": "audio_embed.0.weight",
    "model.layer_pooling.static_weights": "layer_weights",
}
# The speech head is tied in SmolTolk and has no key of its own, but the authors' file holds its duplicate.
_TIED_DUPLICATES: dict[str, str] = {
    "txt_unembed.weight": "txt_embed.weight",
    "audio_unembed.0.weight": "audio_embed.0.weight",
}
_COMPILE_PREFIX = "_orig_mod."
_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_authors_checkpoint(checkpoint_path: str | Path) -> dict[str, Any]:
    """
    Reads an authors' `.pt` checkpoint as plain data (tensors, numbers, strings, containers, dtypes). Files that
    would need arbitrary unpickling (`weights_only=False`, e.g. a pickled custom class) are refused: loading them
    can run code from the file.
    """
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"No checkpoint file at {os.fspath(checkpoint_path)!r}.")
    try:
        # mmap: the file also holds the optimizer state (several times the model's size); only touched pages load.
        # The legacy (pre-zip) torch.save format cannot be memory-mapped and is read whole.
        zipped = zipfile.is_zipfile(checkpoint_path)
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{checkpoint_path} holds objects other than plain data (tensors, numbers, strings, lists, dicts, dtypes), "
            "so it cannot be read with torch.load(weights_only=True). The authors' trainer writes plain data only; "
            "this file was changed or comes from another source (a plain pickle is not a torch.save file either). "
            "This converter never unpickles code (weights_only=False), since that can run arbitrary code from the file."
        ) from err
    except (RuntimeError, EOFError, KeyError) as err:  # what torch's loaders raise on bytes of another format
        raise ValueError(
            f"{checkpoint_path} is not a file written by torch.save (a plain pickle, a truncated download or another "
            f"format?), so it cannot be read as a checkpoint: {err}"
        ) from err
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint or "model_args" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise ValueError(
            f"{checkpoint_path} is not an authors' SmolTolk training checkpoint: expected a dict with 'model' (the "
            f"state dict) and 'model_args', found {found}."
        )
    return dict(checkpoint)


def authors_config(
    model_args: Mapping[str, Any], backbone_sizes: Mapping[str, Any] | None = None
) -> SmolTolkConfig:
    """
    Builds the [`SmolTolkConfig`] matching an authors' `model_args` dict.

    Args:
        model_args: The checkpoint's `"model_args"` entry.
        backbone_sizes: `LlamaConfig` fields of the backbone (hidden size, layers, heads, vocabulary, ...), for a
            backbone not in `KNOWN_BACKBONES`. They replace the lookup by `model_args["backbone"]`; the RoPE base is
            `backbone_sizes["rope_parameters"]` if given, else 10,000 (SmolLM's).
    """
    args = dict(model_args)
    unknown_args = sorted(set(args) - _KNOWN_MODEL_ARGS)
    if unknown_args:
        logger.warning("Ignoring model_args this converter does not know: %s.", unknown_args)
    _check_supported(args)

    if backbone_sizes is not None:
        sizes = dict(backbone_sizes)
        rope_parameters = sizes.pop("rope_parameters", {"rope_type": "default", "rope_theta": _DEFAULT_ROPE_THETA})
        sizes.setdefault("vocab_size", args["txt_vocabsize"] - 3)
    else:
        backbone = args.get("backbone")
        if backbone not in KNOWN_BACKBONES:
            raise ValueError(
                f"Unknown backbone {backbone!r} in model_args. Known backbones: {sorted(KNOWN_BACKBONES)}. For "
                "another Llama-architecture backbone pass its sizes explicitly: backbone_sizes={'hidden_size': ..., "
                "'num_hidden_layers': ..., 'num_attention_heads': ..., 'num_key_value_heads': ..., "
                "'intermediate_size': ..., 'vocab_size': ..., 'rope_parameters': {'rope_type': 'default', "
                "'rope_theta': ...}} (on the command line: --backbone-sizes with the same JSON object)."
            )
        size_name, rope_theta = KNOWN_BACKBONES[backbone]
        sizes = smollm_backbone_sizes(size_name)
        rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}

    text_vocab = sizes["vocab_size"]
    if args["txt_vocabsize"] != text_vocab + 3:
        raise ValueError(
            f"txt_vocabsize={args['txt_vocabsize']} does not match the backbone's text vocabulary ({text_vocab}) "
            "plus the 3 added tokens (bop, eop, swt). Check the backbone sizes."
        )
    for name, offset in (("bop_token", 0), ("eop_token", 1), ("swt_token", 2)):
        if args.get(name) is not None and args[name] != text_vocab + offset:
            raise ValueError(f"{name}={args[name]}, expected {text_vocab + offset} (text vocabulary + {offset}).")
    if args.get("audio_pad_token") is not None and args["audio_pad_token"] != args["audio_vocabsize"] - 1:
        raise ValueError(
            f"audio_pad_token={args['audio_pad_token']}, expected the last speech row ({args['audio_vocabsize'] - 1}): "
            "SmolTolk's speech table is units, then eos, then pad."
        )

    entropy_beta = float(args.get("entropy_reg") or 0.0)
    if entropy_beta and not args.get("layer_selwa_audio"):
        # The authors' loss only adds the entropy term when the selector exists; SmolTolkConfig rejects the pair.
        logger.info("entropy_reg=%s has no effect without the dynamic selector; using entropy_beta=0.", entropy_beta)
        entropy_beta = 0.0

    fields = {
        **sizes,
        "rope_parameters": rope_parameters,
        "max_position_embeddings": args.get("block_size") or sizes.get("max_position_embeddings", 2048),
        # Tied text head: checked tensor by tensor when converting.
        "tie_word_embeddings": True,
        "num_speech_units": args["audio_vocabsize"] - 2,
        "num_input_adapter_layers": args.get("n_audio_in_layers") or 0,
        "num_output_adapter_layers": args.get("n_audio_out_layers") or 0,
        "use_layer_pooling": bool(args.get("layer_wa_audio")),
        "use_dynamic_pooling": bool(args.get("layer_selwa_audio")),
        "use_speech_residual": bool(args.get("raw_speech_residual")),
        "entropy_beta": entropy_beta,
        # The authors pool the raw layer outputs; set explicitly, whatever new models default to.
        "pooling_norm": "none",
        "speech_embedding_scale": 1.0,
    }
    return SmolTolkConfig(**fields)


def _check_supported(args: Mapping[str, Any]) -> None:
    """Refuses `model_args` describing an architecture SmolTolk cannot represent exactly."""
    if args.get("n_codebooks", 1) != 1:
        raise ValueError(
            f"n_codebooks={args['n_codebooks']}: multi-codebook (delay pattern) checkpoints are not supported; "
            "SmolTolk models one stream of speech units (the paper's HuBERT units, n_codebooks=1)."
        )
    if args.get("audio_vocabsize") is None or args.get("txt_vocabsize") is None:
        raise ValueError(
            "This checkpoint is not a text-speech model (audio_vocabsize or txt_vocabsize is None); SmolTolk needs "
            "both the text and the speech vocabulary."
        )
    if args.get("tie_audio_embeddings") is False:
        raise ValueError("tie_audio_embeddings=False: SmolTolk always ties the speech head to the speech embeddings.")
    if args.get("selwa_in_layer") is not None:
        raise ValueError(
            f"selwa_in_layer={args['selwa_in_layer']}: a selector reading one fixed backbone layer is not implemented; "
            "SmolTolk's selector reads the statically pooled state."
        )
    if args.get("layer_selwa_audio"):
        if not args.get("selwa_linear", True):
            raise ValueError(
                "selwa_linear=False: the MLP layer selector is not implemented, only the linear one of the paper."
            )
        if not args.get("layer_wa_audio"):
            raise ValueError(
                "layer_selwa_audio=True with layer_wa_audio=False (selector reading the last layer) is not "
                "implemented: SmolTolk's selector reads the statically pooled state, which needs layer_wa_audio=True."
            )


def _authors_key(smoltolk_key: str) -> str:
    """The authors' key a SmolTolk key is built from (for error messages and the expected-key set)."""
    if smoltolk_key in _DERIVED_SOURCES:
        return _DERIVED_SOURCES[smoltolk_key]
    for theirs, ours in _PREFIX_RULES:
        if smoltolk_key.startswith(ours):
            return theirs + smoltolk_key[len(ours) :]
    raise KeyError(f"SmolTolk key {smoltolk_key!r} has no counterpart in the authors' format.")


def _require_tied(state: Mapping[str, torch.Tensor], duplicate: str) -> None:
    source = _TIED_DUPLICATES[duplicate]
    if not torch.equal(state[duplicate], state[source]):
        raise ValueError(
            f"{duplicate} differs from {source}: SmolTolk ties this head to its embedding, so an untied checkpoint "
            "cannot be converted without changing the model."
        )


def convert_authors_state_dict(
    checkpoint: Mapping[str, Any], backbone_sizes: Mapping[str, Any] | None = None
) -> tuple[SmolTolkConfig, dict[str, torch.Tensor]]:
    """
    Maps an authors' checkpoint dict (`{"model": state_dict, "model_args": {...}, ...}`) to a [`SmolTolkConfig`] and
    a state dict with [`SmolTolkForCausalLM`]'s keys (tensors keep their dtype).

    Raises `ValueError` if a tensor is left over or missing, if a tied duplicate differs from its embedding, or if a
    shape does not match the configuration.
    """
    config = authors_config(checkpoint["model_args"], backbone_sizes)
    state = {key.removeprefix(_COMPILE_PREFIX): tensor for key, tensor in checkpoint["model"].items()}

    with torch.device("meta"):  # the target's key set and shapes, without allocating it
        expected = {key: tensor.shape for key, tensor in SmolTolkForCausalLM(config).state_dict().items()}
    expected_authors = {_authors_key(key) for key in expected} | set(_TIED_DUPLICATES)
    missing, unknown = sorted(expected_authors - set(state)), sorted(set(state) - expected_authors)
    if missing or unknown:
        raise ValueError(
            "The checkpoint does not match the architecture its model_args describe "
            f"(backbone layers={config.num_hidden_layers}, n_audio_in_layers={config.num_input_adapter_layers}, "
            f"n_audio_out_layers={config.num_output_adapter_layers}, layer_wa_audio={config.use_layer_pooling}, "
            f"layer_selwa_audio={config.use_dynamic_pooling}).\nMissing tensors: {missing or 'none'}\n"
            f"Unknown tensors: {unknown or 'none'}"
        )
    for duplicate in _TIED_DUPLICATES:
        _require_tied(state, duplicate)

    text_vocab = config.vocab_size
    txt_embed = state["txt_embed.weight"]
    if txt_embed.shape[0] != text_vocab + 3:
        raise ValueError(
            f"txt_embed.weight has {txt_embed.shape[0]} rows, expected {text_vocab + 3} (text, then bop, eop, swt)."
        )
    logger.info("Dropping the bop/eop rows of txt_embed (ASR/TTS prompt delimiters, unused by SmolTolk).")
    converted: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": txt_embed[:text_vocab],
        "lm_head.weight": txt_embed[:text_vocab],
        # One switch token marked every modality change; both SmolTolk markers take its embedding.
        "model.marker_embed.weight": txt_embed[text_vocab + 2].expand(2, -1).clone(),
        "model.speech_embed_tokens.weight": state["audio_embed.0.weight"],
    }
    if "layer_weights" in state:
        converted["model.layer_pooling.static_weights"] = state["layer_weights"].reshape(-1)
    for key, tensor in state.items():
        for theirs, ours in _PREFIX_RULES:
            if key.startswith(theirs):
                converted[ours + key[len(theirs) :]] = tensor
                break

    bad_shapes = [
        f"{_authors_key(key)} -> {key}: {tuple(converted[key].shape)}, expected {tuple(shape)}"
        for key, shape in expected.items()
        if converted[key].shape != shape
    ]
    if bad_shapes:
        raise ValueError("Tensor shapes do not match the backbone configuration:\n" + "\n".join(bad_shapes))
    return config, converted


def convert_authors_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    dtype: torch.dtype = torch.bfloat16,
    text_tokenizer: str | Path | None = None,
    backbone_sizes: Mapping[str, Any] | None = None,
) -> Path:
    """
    Converts a SmolTolk checkpoint released by the paper's authors (a `.pt` file from their trainer) into a Hugging
    Face folder loadable with `SmolTolkForCausalLM.from_pretrained(output_dir)`.

    Args:
        checkpoint_path: The authors' `.pt` file. It is read with `torch.load(weights_only=True)` only.
        output_dir: Folder to write (created if needed): `model.safetensors`, `config.json`, generation config.
        dtype: Dtype of the saved weights (bfloat16, as the authors trained, by default).
        text_tokenizer: Optional local folder of the backbone's text tokenizer (e.g. SmolLM's): a `SmolTolkProcessor`
            with it and the model's id layout is saved alongside.
        backbone_sizes: `LlamaConfig` fields for a backbone not in `KNOWN_BACKBONES` (see [`authors_config`]).

    Returns:
        The output folder.
    """
    checkpoint = load_authors_checkpoint(checkpoint_path)
    config, state_dict = convert_authors_state_dict(checkpoint, backbone_sizes)
    del checkpoint  # the optimizer state and trainer settings are not needed past this point

    model = SmolTolkForCausalLM._from_config(config, dtype=dtype)
    model.load_state_dict(state_dict, strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    if text_tokenizer is not None:
        _save_processor(text_tokenizer, output_dir, config)
    logger.info("Saved %s to %s.", type(model).__name__, output_dir)
    return output_dir


def _save_processor(text_tokenizer: str | Path, output_dir: Path, config: SmolTolkConfig) -> None:
    """
    Saves a [`SmolTolkProcessor`] holding the backbone's text tokenizer and the model's id layout. It has no speech
    tokenizer: the authors' HuBERT + k-means units are not part of their checkpoint (units can be passed as ids).
    """
    from transformers import AutoTokenizer

    from .processing_smoltolk import SmolTolkProcessor

    tokenizer = AutoTokenizer.from_pretrained(text_tokenizer)
    if len(tokenizer) != config.vocab_size:
        logger.warning(
            "The text tokenizer has %d tokens but the model's text vocabulary has %d: is it the backbone's tokenizer?",
            len(tokenizer),
            config.vocab_size,
        )
    SmolTolkProcessor.from_config(tokenizer, None, config).save_pretrained(output_dir)


def _parse_backbone_sizes(value: str) -> dict[str, Any]:
    """`--backbone-sizes`: a JSON object, or the path of a file holding one."""
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        sizes = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {err}") from err
    if not isinstance(sizes, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of LlamaConfig fields")
    return sizes


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoltolk convert-authors",
        description="Convert a SmolTolk checkpoint released by the paper's authors (.pt) to a Hugging Face folder.",
    )
    parser.add_argument("checkpoint", type=Path, help="the authors' .pt checkpoint (read as plain data only)")
    parser.add_argument("output_dir", type=Path, help="folder to write the converted model to")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16", help="dtype of the saved weights")
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="local folder of the backbone's text tokenizer (saves a processor)"
    )
    parser.add_argument(
        "--backbone-sizes",
        type=_parse_backbone_sizes,
        default=None,
        help="JSON object (or JSON file) of LlamaConfig fields for a backbone not known by name",
    )
    return parser


def cli_convert_authors(argv: Sequence[str] | None = None) -> int:
    """Entry point of `smoltolk convert-authors CHECKPOINT.pt OUTPUT_DIR [--dtype] [--tokenizer] [--backbone-sizes]`."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        output_dir = convert_authors_checkpoint(
            args.checkpoint,
            args.output_dir,
            dtype=_DTYPES[args.dtype],
            text_tokenizer=args.tokenizer,
            backbone_sizes=args.backbone_sizes,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(output_dir)
    return 0


__all__ = [
    "KNOWN_BACKBONES",
    "authors_config",
    "cli_convert_authors",
    "convert_authors_checkpoint",
    "convert_authors_state_dict",
    "load_authors_checkpoint",
]
