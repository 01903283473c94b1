"""PyTorch SmolTolk: a Llama text LM extended with speech units, speech adapters and dynamic layer pooling.

Paper: "Text-Speech Language Models with Improved Cross-Modal Transfer by Aligning Abstraction Levels".

Data flow for one sequence of joint ids (see `configuration_smoltolk.py` for the id layout):

    ids --embed--> z ----------------------------------------------------------------+ (residual, Eq. 5)
          z[speech spans] --input adapter (causal within each span)--> merged          |
          merged --backbone layers 1..L--> c^(1..L) (last one after the final norm)    |
          text:   lm_head(norm(h_L))                                                   |
          speech: pool(c^(1..L)) (static phi + dynamic selector S, Eqs. 3-4) + z <----+
                  --output adapter (causal over the whole sequence)--> speech unembedding (tied)

Only relative imports of this package are used so that `save_pretrained` can ship this file as Hub remote code.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
)
from transformers.utils import logging
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_smoltolk import (
    NEW_MODEL_POOLING_NORM,
    NEW_MODEL_SPEECH_EMBEDDING_SCALE,
    SmolTolkConfig,
    shared_fields,
)

logger = logging.get_logger(__name__)

# Parameters of the text LM (the backbone and its tied text head), by name; everything else is what SmolTolk adds.
BACKBONE_PARAMETER_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")

# Attention implementations that accept an arbitrary mask; the input adapter's per-span mask needs one.
_ARBITRARY_MASK_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention")

# transformers 5.24 renamed the cache argument of decoder layers, mask builders, `generate()` and model outputs from
# `past_key_values` to `cache`. Read the names the installed release uses, so one file works on both sides.
_LAYER_CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"
_MASK_CACHE_ARG = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"
_OUTPUT_CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"


def _one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache, accepted under both names as transformers does (`past_key_values` before 5.24, `cache` since)."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the cache once, as `cache` or as `past_key_values` (its older name), not both.")
    return cache if cache is not None else past_key_values


def scored_targets(labels: torch.Tensor, config: SmolTolkConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks `(batch, seq_len - 1)` of the next-token targets scored by the text head and by the speech
    head (the target of position `i` is `labels[:, i + 1]`; markers, speech pad and -100 are never scored)."""
    targets = labels[:, 1:]
    is_text = (targets >= 0) & (targets < config.vocab_size)
    is_speech = (targets >= config.speech_token_offset) & (targets < config.speech_pad_id)
    return is_text, is_speech


def _scored_rows(
    states: torch.Tensor, targets: torch.Tensor, scored: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `states` `(batch, seq, d)` and `targets` `(batch, seq)` that a head scores, for a summed
    cross-entropy: in eager mode only the `scored` ones, so the head runs where its targets are; under
    `torch.compile`, whose graphs need static shapes, all of them with the others' targets set to -100 (ignored)."""
    if torch.compiler.is_compiling():
        return states.flatten(0, 1), targets.masked_fill(~scored, -100).flatten()
    return states[scored], targets[scored]


def _write_head(out: torch.Tensor, head, states: torch.Tensor, where: torch.Tensor) -> None:
    """Writes `head(states)` into `out` `(batch, kept, n)` at the positions `where` selects: computed there only
    in eager mode, everywhere and then selected under `torch.compile` (static shapes)."""
    if torch.compiler.is_compiling():
        out.copy_(torch.where(where[..., None], head(states).to(out.dtype), out))
    else:
        out[where] = head(states[where]).to(out.dtype)


def selector_positions(attention_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Boolean mask `(batch, seq_len)` (the first two dimensions of `like`, on its device) of the positions whose
    selector entropy enters the loss: the non-padding ones of a 2D `attention_mask`, every position otherwise."""
    if attention_mask is not None and attention_mask.ndim == 2:
        return attention_mask.to(like.device).bool()
    return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)


def loss_normalizers(
    config: SmolTolkConfig, labels: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """`[scored targets, selector positions]` of a batch: the two counts the loss divides by (`num_items_in_batch`
    and `num_positions_in_batch` of [`SmolTolkForCausalLM.forward`] are their sums over a global batch)."""
    is_text, is_speech = scored_targets(labels, config)
    positions = selector_positions(attention_mask, labels)
    return torch.stack([(is_text | is_speech).sum(), positions.sum()])


@dataclass
class SmolTolkModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
        Text-path state: the backbone's last layer after the final norm (the text head reads it).
    speech_hidden_state (`torch.FloatTensor` of shape `(batch_size, seq_len, hidden_size)`):
        Speech-path state: pooled layers (+ residual) after the output adapter (the speech head reads it).
    layer_weights (`torch.FloatTensor` of shape `(batch_size, seq_len, num_hidden_layers)`, *optional*):
        Dynamic layer weights `omega` of the selector (None without dynamic pooling).
    """

    speech_hidden_state: torch.FloatTensor | None = None
    layer_weights: torch.FloatTensor | None = None


@dataclass
class SmolTolkCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        `(text CE sum + speech CE sum) / scored targets - entropy_beta * (selector entropy sum) / positions`: each
        sum over the batch, each count the batch's own (`num_items_in_batch`, `num_positions_in_batch` when given:
        the counts of a whole global batch, so that the loss parts of its micro-batches add up to its loss).
    logits (`torch.FloatTensor` of shape `(batch_size, kept_positions, joint_vocab_size)`, *optional*):
        Joint-vocabulary logits; ids of the modality that cannot come next (and markers, speech pad) are `-inf`.
        Not computed when `labels` is given (training never materialises joint logits).
    text_loss / speech_loss (`torch.FloatTensor`, *optional*):
        Mean cross-entropy over the text / speech targets of the batch (NaN-free: 0 when there are none).
    layer_weights_entropy (`torch.FloatTensor`, *optional*):
        Mean entropy of the dynamic layer weights over non-padding positions.
    num_text_targets / num_speech_targets (`torch.LongTensor`, *optional*):
        Number of scored targets of each modality.
    layer_weights (`torch.FloatTensor` of shape `(batch_size, seq_len, num_hidden_layers)`, *optional*):
        Dynamic layer weights `omega`, returned with `output_layer_weights=True`.
    """

    text_loss: torch.FloatTensor | None = None
    speech_loss: torch.FloatTensor | None = None
    layer_weights_entropy: torch.FloatTensor | None = None
    num_text_targets: torch.LongTensor | None = None
    num_speech_targets: torch.LongTensor | None = None
    layer_weights: torch.FloatTensor | None = None


class SmolTolkLayerPooling(nn.Module):
    """
    Softmax-weighted average of the backbone layer outputs (paper Eqs. 3-4): static weights `phi` give `c'`; the
    selector `S` (a linear layer `d -> L`) reads `c'` and gives input-dependent weights `omega` for the final average.

    With `config.pooling_norm == "rmsnorm"` each layer output is divided by its root mean square (per position, as
    RMSNorm does) before the averages, and the pooled state gets one learnable gain: the raw residual states of a
    pretrained LM are large (RMS 2-40, ~1000 at an attention-sink position), which without it makes the selector's
    softmax near one-hot and the speech logits far from uniform at init (docs/diagnosis.md). The scales enter the
    averaging weights (`omega_l / rms_l`), so no normalised copy of the layer stack is made.
    """

    def __init__(self, config: SmolTolkConfig):
        super().__init__()
        self.static_weights = nn.Parameter(torch.zeros(config.num_hidden_layers))  # phi, init 0.01 * randn
        self.selector = (
            nn.Linear(config.hidden_size, config.num_hidden_layers, bias=True) if config.use_dynamic_pooling else None
        )
        self.norm_weight = nn.Parameter(torch.ones(config.hidden_size)) if config.pooling_norm == "rmsnorm" else None
        self.eps = config.rms_norm_eps

    def _inverse_rms(self, layer_states: list[torch.Tensor]) -> torch.Tensor:
        """`(batch, seq, L)` float32 `1 / sqrt(mean(c^2) + eps)` of each layer output at each position."""
        hidden_size = layer_states[0].shape[-1]
        squares = [torch.linalg.vector_norm(state, dim=-1, dtype=torch.float32).square() for state in layer_states]
        return torch.rsqrt(torch.stack(squares, dim=-1) / hidden_size + self.eps)

    def forward(self, layer_states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        stacked = torch.stack(layer_states, dim=-2)  # (batch, seq, L, d)
        scales = self._inverse_rms(layer_states) if self.norm_weight is not None else 1.0  # (batch, seq, L)
        phi = self.static_weights.float().softmax(-1)  # (L,)
        static_weights = (phi * scales).expand(stacked.shape[:-1]).to(stacked.dtype)  # (batch, seq, L)
        pooled = torch.einsum("btld,btl->btd", stacked, static_weights)  # c'
        omega = None
        if self.selector is not None:
            omega = self.selector(pooled).float().softmax(-1)  # (batch, seq, L)
            pooled = torch.einsum("btld,btl->btd", stacked, (omega * scales).to(stacked.dtype))  # c-bar
        if self.norm_weight is not None:
            pooled = pooled * self.norm_weight
        return pooled, omega


class SmolTolkPreTrainedModel(LlamaPreTrainedModel):
    config: SmolTolkConfig
    config_class = SmolTolkConfig
    # Hidden states and attentions are recorded for the backbone layers only (not the adapters).
    _can_record_outputs = {
        "hidden_states": OutputRecorder(LlamaDecoderLayer, layer_name="layers"),
        "attentions": OutputRecorder(LlamaAttention, index=1, layer_name="layers"),
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SmolTolkLayerPooling):
            init.normal_(module.static_weights, mean=0.0, std=0.01)
            if module.norm_weight is not None:
                init.ones_(module.norm_weight)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """
        Same as [`PreTrainedModel.from_pretrained`], but a checkpoint that lacks any weight of the model (adapters,
        pooling, speech table, ...) raises instead of leaving those weights randomly initialised, and one that holds
        weights the model has no place for (a config override that switches off an adapter or the dynamic pooling
        the folder was trained with) raises instead of dropping them.
        """
        wants_info = kwargs.pop("output_loading_info", False)
        source = args[0] if args else kwargs.get("pretrained_model_name_or_path")
        _check_model_folder(source, has_config="config" in kwargs or len(args) > 1)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except OSError as error:  # transformers' messages do not always say what was being loaded
            raise OSError(f"Cannot load a model from {source!s}: {error}") from error
        for kind, consequence in (
            ("missing_keys", "lacks {count} weight(s) of {name}: {keys}. They would be randomly initialised."),
            ("unexpected_keys", "holds {count} weight(s) that {name} has no place for: {keys}. They would be dropped."),
        ):
            keys = sorted(info.get(kind, []))
            if keys:
                shown = ", ".join(keys[:12]) + (" ..." if len(keys) > 12 else "")
                raise ValueError(
                    f"The checkpoint {source!s} "
                    + consequence.format(count=len(keys), name=cls.__name__, keys=shown)
                    + " Check that the folder was saved from a model with the same configuration (adapter depths, "
                    "pooling switches) and load it without overriding them; to build a new SmolTolk from a text LM "
                    "use `SmolTolkForCausalLM.from_text_model`."
                )
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory: Any, *args: Any, **kwargs: Any) -> None:
        """[`PreTrainedModel.save_pretrained`], with `auto_map` entries for every Auto class SmolTolk supports."""
        if self._auto_class is not None:
            # transformers writes auto_map for AutoConfig and the saved class only.
            module = __name__.split(".")[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.{SmolTolkModel.__name__}",
                "AutoModelForCausalLM": f"{module}.{SmolTolkForCausalLM.__name__}",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)


def _check_model_folder(source: Any, has_config: bool) -> None:
    """Refuses a local model path that does not exist, or a folder without `config.json` when no config is given
    (transformers would build the default config, a 7B-parameter model, and fill it with random weights)."""
    if not isinstance(source, (str, os.PathLike)):
        return
    path = os.path.expanduser(os.fspath(source))
    if os.path.isdir(path):
        if not has_config and not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(
                f"{path!r} has no config.json, so it is not a saved model folder (or it was copied incompletely). "
                "Point to the folder `save_pretrained` wrote, or pass `config=`."
            )
    elif not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1):
        # Not a Hub id ("name" or "org/name") either.
        raise FileNotFoundError(f"No model folder at {path!r}: the path does not exist.")


def _last_non_speech(is_speech: torch.Tensor, past_length: int) -> torch.Tensor:
    """`(batch, seq)` absolute index of the last non-speech position at or before each position (-1 if none)."""
    positions = torch.arange(is_speech.shape[1], device=is_speech.device) + past_length
    return torch.where(is_speech, -1, positions).cummax(dim=1).values


def _span_starts(is_speech: torch.Tensor, past_length: int, carried_start: torch.Tensor | None) -> torch.Tensor:
    """
    For each position, the absolute index where the input adapter's attention window begins: the start of the
    contiguous speech span it belongs to, or the position itself for non-speech positions.

    Args:
        is_speech: `(batch, seq)` bool, speech ids of the current chunk.
        past_length: number of cached positions before the chunk.
        carried_start: `(batch,)` start of the speech span the cached prefix ends in (only read where the chunk
            starts with speech and has no break before).
    """
    last_break = _last_non_speech(is_speech, past_length)
    if carried_start is None:
        carried_start = is_speech.new_zeros(is_speech.shape[0], dtype=torch.long) + past_length
    starts = torch.where(last_break >= 0, last_break + 1, carried_start.to(is_speech.device)[:, None])
    positions = torch.arange(is_speech.shape[1], device=is_speech.device) + past_length
    return torch.where(is_speech, starts, positions)


def trailing_speech_span_start(input_ids: torch.Tensor, speech_token_offset: int) -> torch.Tensor:
    """`(batch,)` index where the speech span that `input_ids` ends in began (= length if it ends in non-speech)."""
    if input_ids.shape[1] == 0:
        return input_ids.new_zeros(input_ids.shape[0])
    return _last_non_speech(input_ids >= speech_token_offset, 0)[:, -1] + 1


class SmolTolkInputAdapter(nn.ModuleList):
    """
    The input speech adapter (paper section 3.1): decoder layers, sized like the backbone's, that compose each
    contiguous speech span on its own (causal attention restricted to the span, global rotary positions). Text
    positions pass through unchanged.

    The module owns everything that makes this work inside the model:
    - its attention implementation: the model's, except those that cannot take an arbitrary mask (flash attention),
      for which it runs `sdpa`;
    - its per-span causal mask;
    - its cache slots: layer indices `num_hidden_layers .. num_hidden_layers + n - 1` of the model's cache (see
      `SmolTolkConfig.get_text_config`);
    - placeholder cache entries for chunks without speech, whose adapter outputs would all be discarded;
    - without a cache (training, scoring), a packed path that runs the layers on the speech positions only.

    The layers are the items of the list, so their weights keep the names `model.input_adapter.N.*`.
    """

    def __init__(self, config: SmolTolkConfig):
        super().__init__()
        self.model_config = config
        # A config of its own, so that its attention implementation can differ from the model's.
        self.config = copy.copy(config)
        first_idx = config.num_hidden_layers  # cache slots after the backbone's
        self.extend(LlamaDecoderLayer(self.config, first_idx + i) for i in range(config.num_input_adapter_layers))

    def _sync_attention_implementation(self) -> None:
        implementation = self.model_config._attn_implementation
        if implementation not in _ARBITRARY_MASK_IMPLEMENTATIONS:
            implementation = "sdpa"
        if self.config._attn_implementation != implementation:
            self.config._attn_implementation = implementation

    def forward(
        self,
        z: torch.Tensor,
        is_speech: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Cache | None,
        past_length: int,
        speech_span_start: torch.LongTensor | None,
        **layer_kwargs: Any,
    ) -> torch.Tensor:
        """
        Args:
            z: `(batch, seq, d)` joint input embeddings.
            is_speech: `(batch, seq)` bool, speech positions.
            attention_mask: `(batch, past + seq)` 2D padding mask, or None.
            cache: the model's cache (or None); the adapter reads and writes its own slots.
            past_length: cached positions before this chunk.
            speech_span_start: `(batch,)` where the speech span the cached prefix ends in began (see
                `trailing_speech_span_start`), needed when the chunk continues it.
            layer_kwargs: passed to every decoder layer (positions, rotary embeddings, use_cache, ...).

        Returns:
            `(batch, seq, d)`: adapted embeddings at speech positions, `z` elsewhere.
        """
        if len(self) == 0:
            return z
        if not self.training and not torch.compiler.is_compiling() and not bool(is_speech.any()):
            # No speech query in the chunk: skip the layers. A speech query never attends to a non-speech key, so
            # zero keys/values keep the cache aligned with the backbone's without changing any later result.
            # (Compiled graphs cannot branch on values: they run the layers, whose outputs are discarded alike.)
            if cache is not None:
                placeholder = z.new_zeros(z.shape[0], self.config.num_key_value_heads, z.shape[1], self.config.head_dim)
                for layer in self:
                    cache.update(placeholder, placeholder, layer.self_attn.layer_idx)
            return z

        if cache is None and not torch.compiler.is_compiling():
            keep = is_speech if attention_mask is None else is_speech & attention_mask.bool()
            if bool(keep.any()):
                return self._forward_packed(z, keep, layer_kwargs)

        starts = _span_starts(is_speech, past_length, speech_span_start)  # (batch, seq), absolute indices
        self._sync_attention_implementation()
        mask_kwargs = dict(
            config=self.config, inputs_embeds=z, position_ids=layer_kwargs["position_ids"], **{_MASK_CACHE_ARG: cache}
        )
        if z.shape[1] == 1 and not torch.compiler.is_compiling():
            # One query per row (an eager decoding step): its span is a window over the keys, that is a padding mask,
            # which transformers builds without the per-element vmap of an `and_mask_function` (~8 ms a step for
            # SmolTolk-150M on CPU; a compiled graph traces the vmap once, and its key count must not depend on a
            # static cache's data-dependent length).
            keys = is_speech.new_ones(len(z), past_length + 1) if attention_mask is None else attention_mask.bool()
            key_mask = keys & (torch.arange(keys.shape[-1], device=z.device) >= starts)  # (batch, keys)
            span_mask = create_causal_mask(attention_mask=key_mask, **mask_kwargs)
        else:

            def within_speech_span(batch_idx, head_idx, q_idx, kv_idx):
                return kv_idx >= starts[batch_idx, q_idx - past_length]

            span_mask = create_causal_mask(
                attention_mask=attention_mask, and_mask_function=within_speech_span, **mask_kwargs
            )
        adapted = z
        for layer in self:
            adapted = layer(adapted, attention_mask=span_mask, **{_LAYER_CACHE_ARG: cache}, **layer_kwargs)
        return torch.where(is_speech[..., None], adapted, z)

    def _forward_packed(self, z: torch.Tensor, keep: torch.Tensor, layer_kwargs: dict[str, Any]) -> torch.Tensor:
        """
        The path without a cache (training, scoring): only the `keep` positions `(batch, seq)` (speech, not padding)
        go through the layers, packed into one sequence `(1, n, d)` in which every speech span of the batch attends
        within itself, with its global rotary positions. Text positions, which the adapter leaves unchanged, cost
        nothing, and the result at speech positions is the full path's.
        """
        batch, seq = keep.shape
        rows, cols = keep.nonzero(as_tuple=True)  # (n,) each, row-major: every span stays contiguous
        span_start = _span_starts(keep, 0, None)[rows, cols]  # (n,) where each position's span begins in its row
        # A span is contiguous in the row and in the packed order alike: its packed start is as far back.
        packed_start = torch.arange(rows.shape[0], device=z.device) - (cols - span_start)  # (n,)

        def within_packed_span(batch_idx, head_idx, q_idx, kv_idx):
            return kv_idx >= packed_start[q_idx]

        packed = z[rows, cols].unsqueeze(0)  # (1, n, d)
        kwargs = dict(layer_kwargs)
        kwargs["position_ids"] = layer_kwargs["position_ids"].expand(batch, seq)[rows, cols].unsqueeze(0)
        kwargs["position_embeddings"] = tuple(
            table.expand(batch, seq, -1)[rows, cols].unsqueeze(0) for table in layer_kwargs["position_embeddings"]
        )
        self._sync_attention_implementation()
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=packed,
            attention_mask=None,
            and_mask_function=within_packed_span,
            **{_MASK_CACHE_ARG: None},
        )
        for layer in self:
            packed = layer(packed, attention_mask=mask, **{_LAYER_CACHE_ARG: None}, **kwargs)
        return z.index_put((rows, cols), packed[0])


class SmolTolkModel(SmolTolkPreTrainedModel, LlamaModel):
    """
    The SmolTolk trunk: joint embeddings, input speech adapter, the Llama backbone (module names unchanged, so a
    SmolLM checkpoint loads key for key), layer pooling with the speech residual, and the output speech adapter.
    Returns both the text-path state (`last_hidden_state`) and the speech-path state (`speech_hidden_state`).

    Every decoder layer, adapters included, has a slot of its own in the cache: backbone layers keep their indices
    `0 .. L-1`, the input adapter follows, then the output adapter. Caches built from the config
    (`DynamicCache(config=model.config)`, `StaticCache(config=model.config, ...)`, and those `generate()` builds) have
    all of them.
    """

    def __init__(self, config: SmolTolkConfig):
        super().__init__(config)
        d = config.hidden_size
        self.marker_embed = nn.Embedding(2, d)  # <|text|>, <|speech|>: text-side inputs, never targets
        self.speech_embed_tokens = nn.Embedding(config.speech_vocab_size, d)  # units, eos, pad; tied speech head
        self.input_adapter = SmolTolkInputAdapter(config)
        self.layer_pooling = SmolTolkLayerPooling(config) if config.use_layer_pooling else None
        first_out_idx = config.num_hidden_layers + config.num_input_adapter_layers
        self.output_adapter = nn.ModuleList(
            [LlamaDecoderLayer(config, first_out_idx + i) for i in range(config.num_output_adapter_layers)]
        )
        # LlamaModel.__init__ ran post_init before the modules above existed.
        self.post_init()

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Joint embedding `z`: text table for text ids, marker table for markers, speech table (times
        `speech_embedding_scale`) for speech ids."""
        cfg = self.config
        text = self.embed_tokens(input_ids.clamp(max=cfg.vocab_size - 1))
        markers = self.marker_embed((input_ids - cfg.text_marker_id).clamp(0, 1))
        speech = self.speech_embed_tokens((input_ids - cfg.speech_token_offset).clamp(min=0))
        if cfg.speech_embedding_scale != 1.0:
            speech = speech * cfg.speech_embedding_scale
        is_marker = ((input_ids == cfg.text_marker_id) | (input_ids == cfg.speech_marker_id))[..., None]
        is_speech = (input_ids >= cfg.speech_token_offset)[..., None]
        return torch.where(is_speech, speech, torch.where(is_marker, markers, text))

    def _check_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        past_length: int | torch.Tensor,
        speech_span_start: torch.LongTensor | None,
    ) -> None:
        """Refuses ids that are not a non-empty `(batch, seq)` integer tensor of joint ids, a sequence longer than
        the positions, a 2D mask whose shape is not `(batch, past_length + seq)`, and ids that continue a cached
        speech span without `speech_span_start`.

        The checks after the shape checks read tensor values (the ids' min/max, a static cache's length), a host
        sync that `torch.compile` cannot put in a graph; they run in eager mode only. Compiled forwards get their
        inputs checked outside the graph (`SmolTolkForCausalLM.check_inputs`): by `SmolTolkTrainer` with
        `torch_compile=True`; in generation, by transformers' own compiled `generate()`, which runs the prompt
        eagerly (every later id is the model's own prediction, which the joint logits keep in range)."""
        if not isinstance(input_ids, torch.Tensor):
            raise ValueError(
                f"input_ids must be a torch.LongTensor of shape (batch, seq), got a {type(input_ids).__name__}: "
                "use torch.tensor([ids]) (SmolTolkProcessor returns tensors)."
            )
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise ValueError(
                f"input_ids must hold integer ids (torch.long), got dtype {input_ids.dtype}; ids are never rounded."
            )
        if input_ids.ndim != 2 or input_ids.numel() == 0:
            raise ValueError(
                f"input_ids must have a non-empty shape (batch, seq), got {tuple(input_ids.shape)}"
                + (": add the batch dimension with ids[None]." if input_ids.ndim == 1 and input_ids.numel() else ".")
            )
        if torch.compiler.is_compiling():
            return
        cfg = self.config
        past_length = int(past_length)
        if attention_mask is not None and attention_mask.ndim == 2:
            expected = (input_ids.shape[0], past_length + input_ids.shape[1])
            if tuple(attention_mask.shape) != expected:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, but the ids need {expected}: (batch, "
                    f"cached length {past_length} + new ids {input_ids.shape[1]}). A shorter mask would silently "
                    "change the logits; pass one mask entry per token, cached tokens included."
                )
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= cfg.joint_vocab_size:
            raise ValueError(
                f"input_ids must lie in [0, {cfg.joint_vocab_size}) (text [0, {cfg.vocab_size}), markers "
                f"{cfg.text_marker_id}/{cfg.speech_marker_id}, speech [{cfg.speech_token_offset}, "
                f"{cfg.speech_pad_id}]); got values in [{low}, {high}]. Build ids with SmolTolkProcessor."
            )
        total = past_length + input_ids.shape[1]
        if total > cfg.max_position_embeddings:
            raise ValueError(
                f"Sequence length {total} exceeds max_position_embeddings={cfg.max_position_embeddings}. "
                "Truncate the input (or crop the cache), or raise max_position_embeddings in the config."
            )
        continues_speech = input_ids[:, 0] >= cfg.speech_token_offset
        if past_length > 0 and speech_span_start is None and bool(continues_speech.any()):
            raise ValueError(
                "The ids continue a speech span of the cached prefix: pass `speech_span_start` (see "
                "`trailing_speech_span_start`) or use `generate()`, which does it for you."
            )

    def _check_cache(self, cache: Cache) -> None:
        """A cache with fixed layers must have a slot for every decoder layer, adapters included."""
        needed = self.config.num_total_layers
        grows = getattr(cache, "layer_class_to_replicate", None) is not None  # DynamicCache() adds layers on use
        if not grows and len(cache.layers) < needed:
            raise ValueError(
                f"SmolTolk needs a cache with {needed} layers ({self.config.num_hidden_layers} backbone + "
                f"{needed - self.config.num_hidden_layers} adapter layers), got a {type(cache).__name__} with "
                f"{len(cache.layers)}. Build it from the SmolTolk config, e.g. `DynamicCache(config=model.config)` or "
                "`StaticCache(config=model.config, max_cache_len=...)`, not from the backbone's."
            )

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        speech_span_start: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> SmolTolkModelOutputWithPast:
        r"""
        cache (`Cache`, *optional*):
            Keys and values of earlier positions, one slot per decoder layer (backbone and adapters); also accepted
            as `past_key_values`, its name before transformers 5.24.
        speech_span_start (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            With a non-empty cache only: index at which the speech span the cached prefix ends in began. Needed when
            the new ids continue a speech span; `generate()` fills it in from the full ids.
        """
        cache = _one_cache(cache, past_key_values)
        if input_ids is None or inputs_embeds is not None:
            raise ValueError(
                "SmolTolk needs `input_ids` (and no `inputs_embeds`): the modality of each position is read from its id."
            )
        if attention_mask is not None and attention_mask.ndim != 2 and len(self.input_adapter) > 0:
            raise ValueError(
                "SmolTolk takes a 2D padding mask (batch, seq): the input adapter builds its own per-speech-span "
                f"mask on top of it, which a prepared {attention_mask.ndim}D mask would bypass."
            )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if use_cache and cache is None:
            # Slots added on first use: the same full-attention layers `DynamicCache(config=self.config)` declares
            # (a Llama backbone has no other kind), without building the decoder config, which torch.compile
            # cannot trace.
            cache = DynamicCache()
        if cache is not None:
            self._check_cache(cache)
        past_length = cache.get_seq_length() if cache is not None else 0
        self._check_inputs(input_ids, attention_mask, past_length, speech_span_start)

        is_speech = input_ids >= self.config.speech_token_offset  # (batch, seq)

        z = self.embed(input_ids)  # (batch, seq, d)
        if position_ids is None:
            position_ids = (torch.arange(input_ids.shape[1], device=z.device) + past_length).unsqueeze(0)
        position_embeddings = self.rotary_emb(z, position_ids=position_ids)
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=z,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{_MASK_CACHE_ARG: cache},
        )
        layer_kwargs = dict(
            position_embeddings=position_embeddings, position_ids=position_ids, use_cache=use_cache, **kwargs
        )

        # 1. Input adapter: causal attention restricted to each contiguous speech span.
        hidden_states = self.input_adapter(
            z, is_speech, attention_mask, cache, past_length, speech_span_start, **layer_kwargs
        )

        # 2. Backbone; keep every layer output for pooling (the last one after the final norm).
        layer_states: list[torch.Tensor] = []
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states, attention_mask=causal_mask, **{_LAYER_CACHE_ARG: cache}, **layer_kwargs
            )
            layer_states.append(hidden_states)
        text_state = self.norm(hidden_states)
        layer_states[-1] = text_state

        # 3. Speech path: layer pooling, raw-embedding residual, output adapter.
        omega = None
        if self.layer_pooling is not None:
            speech_state, omega = self.layer_pooling(layer_states)
        else:
            speech_state = text_state
        if self.config.use_speech_residual:
            speech_state = speech_state + z
        for layer in self.output_adapter:
            speech_state = layer(speech_state, attention_mask=causal_mask, **{_LAYER_CACHE_ARG: cache}, **layer_kwargs)

        return SmolTolkModelOutputWithPast(
            last_hidden_state=text_state,
            speech_hidden_state=speech_state,
            layer_weights=omega,
            **{_OUTPUT_CACHE_FIELD: cache},
        )


class SmolTolkForCausalLM(SmolTolkPreTrainedModel, GenerationMixin):
    """
    SmolTolk with its two heads: the backbone's tied text head and the tied speech head. Targets are scored by the
    head of their own modality with its own softmax; generation logits are joint-vocabulary logits in which the
    modality that cannot come next (decided by the last input token) is `-inf`.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = LlamaForCausalLM._tp_plan
    _pp_plan = LlamaForCausalLM._pp_plan

    def __init__(self, config: SmolTolkConfig):
        super().__init__(config)
        self.model = SmolTolkModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
        # Speech generation ends at the speech end token as text generation ends at the text EOS.
        eos = self.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if config.speech_eos_id not in eos:
            self.generation_config.eos_token_id = eos + [config.speech_eos_id]

    def speech_logits(self, speech_state: torch.Tensor) -> torch.Tensor:
        """Speech-head logits over the speech table (`num_speech_units + 2` rows, tied to the speech embeddings)."""
        return F.linear(speech_state, self.model.speech_embed_tokens.weight)

    def _joint_logits(
        self, text_state: torch.Tensor, speech_state: torch.Tensor, next_is_speech: torch.Tensor
    ) -> torch.Tensor:
        """Joint logits `(batch, kept, joint_vocab)`, each position computed by the one head that may speak next."""
        cfg = self.config
        batch, kept, _ = text_state.shape
        logits = text_state.new_full((batch, kept, cfg.joint_vocab_size), float("-inf"), dtype=torch.float32)
        _write_head(logits[..., : cfg.vocab_size], self.lm_head, text_state, ~next_is_speech)
        # Units and eos are allowed; the pad row is never predicted.
        units_and_eos = cfg.speech_pad_id - cfg.speech_token_offset
        _write_head(
            logits[..., cfg.speech_token_offset : cfg.speech_pad_id],
            lambda state: self.speech_logits(state)[..., :units_and_eos],
            speech_state,
            next_is_speech,
        )
        return logits

    def _loss(
        self,
        text_state: torch.Tensor,
        speech_state: torch.Tensor,
        labels: torch.LongTensor,
        omega: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None,
        num_positions_in_batch: torch.Tensor | int | None,
    ) -> dict[str, torch.Tensor]:
        """Per-modality cross-entropy on next-token targets, each head only where its targets are, minus the
        weighted selector entropy; sums over this batch divided by the global counts when given (see `loss`)."""
        cfg = self.config
        targets = labels[:, 1:]  # target of position i is labels[i + 1]
        text_state, speech_state = text_state[:, :-1], speech_state[:, :-1]
        is_text_target, is_speech_target = scored_targets(labels, cfg)

        text_rows, text_targets = _scored_rows(text_state, targets, is_text_target)
        text_sum = F.cross_entropy(self.lm_head(text_rows).float(), text_targets, reduction="sum")  # V classes
        speech_rows, speech_targets = _scored_rows(speech_state, targets - cfg.speech_token_offset, is_speech_target)
        speech_logits = self.speech_logits(speech_rows).float()  # N + 2 classes
        speech_logits[:, cfg.speech_pad_id - cfg.speech_token_offset] = float("-inf")
        speech_sum = F.cross_entropy(speech_logits, speech_targets, reduction="sum")

        n_text, n_speech = is_text_target.sum(), is_speech_target.sum()
        denominator = num_items_in_batch if num_items_in_batch is not None else (n_text + n_speech).clamp(min=1)
        loss = (text_sum + speech_sum) / denominator
        out = dict(
            text_loss=text_sum.detach() / n_text.clamp(min=1),
            speech_loss=speech_sum.detach() / n_speech.clamp(min=1),
            num_text_targets=n_text,
            num_speech_targets=n_speech,
        )
        if omega is not None:
            entropy = -(omega * omega.clamp(min=1e-12).log()).sum(-1)  # (batch, seq)
            keep = selector_positions(attention_mask, entropy)
            entropy_sum, n_positions = torch.where(keep, entropy, 0.0).sum(), keep.sum().clamp(min=1)
            positions = num_positions_in_batch if num_positions_in_batch is not None else n_positions
            loss = loss - cfg.entropy_beta * entropy_sum / positions
            out["layer_weights_entropy"] = entropy_sum.detach() / n_positions
        out["loss"] = loss
        return out

    def _check_labels(self, input_ids: torch.LongTensor | None, labels: torch.LongTensor | None) -> None:
        """Refuses labels whose shape is not the ids' or that are not joint ids or -100 (the value check in eager
        mode only, as in `SmolTolkModel._check_inputs`)."""
        if labels is None:
            return
        if input_ids is None or labels.shape != input_ids.shape:
            raise ValueError(
                f"labels must have the shape of input_ids, got {tuple(labels.shape)} and "
                f"{None if input_ids is None else tuple(input_ids.shape)}; pass labels unshifted (the model shifts)."
            )
        if torch.compiler.is_compiling():
            return
        bad = ((labels < 0) & (labels != -100)) | (labels >= self.config.joint_vocab_size)
        if bool(bad.any()):
            raise ValueError(
                f"labels must be joint ids in [0, {self.config.joint_vocab_size}) or -100; got {int(labels[bad][0])}. "
                "Use -100 for positions that are not scored."
            )

    def check_inputs(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        speech_span_start: torch.LongTensor | None = None,
    ) -> None:
        """
        Raises the `ValueError` the forward would raise for these inputs (ids, labels, padding mask, cache length,
        cached speech span). The forward runs these checks itself in eager mode; under `torch.compile` the ones
        that read tensor values cannot be part of the graph and are skipped, so code that calls a compiled model
        on inputs it did not make checks them once per batch with this method, outside the compiled region
        (`SmolTolkTrainer` does with `torch_compile=True`).
        """
        self._check_labels(input_ids, labels)
        past_length = cache.get_seq_length() if cache is not None else 0
        self.model._check_inputs(input_ids, attention_mask, past_length, speech_span_start)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        speech_span_start: torch.LongTensor | None = None,
        output_layer_weights: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        num_positions_in_batch: torch.Tensor | int | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> SmolTolkCausalLMOutputWithPast:
        r"""
        cache (`Cache`, *optional*):
            See [`SmolTolkModel.forward`]; also accepted as `past_key_values`.
        labels (`torch.LongTensor` of shape `(batch_size, seq_len)`, *optional*):
            Joint ids, usually `input_ids` with `-100` where nothing is scored; shifted inside (position `i` predicts
            `labels[i + 1]`). Markers and speech pad are never scored. With labels, `logits` is not computed.
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            As in Llama: keep the last `n` positions (0 keeps all) or the given indices when computing logits.
        speech_span_start (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            See [`SmolTolkModel.forward`].
        output_layer_weights (`bool`, *optional*, defaults to `False`):
            Return the dynamic layer weights `omega` (e.g. for word segmentation).
        num_items_in_batch (`int`, *optional*):
            Scored targets of the whole global batch (all gradient-accumulation steps and processes; passed by the
            `Trainer`): divides the cross-entropy sum. Default: this batch's count.
        num_positions_in_batch (`int`, *optional*):
            Selector positions (non-padding) of the whole global batch (passed by `SmolTolkTrainer`): divides the
            selector entropy sum. Default: this batch's count. With both, the losses of the micro-batches of a
            global batch add up to that batch's loss however it is split.
        """
        self._check_labels(input_ids, labels)
        outputs: SmolTolkModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            speech_span_start=speech_span_start,
            **kwargs,
        )
        text_state, speech_state = outputs.last_hidden_state, outputs.speech_hidden_state

        logits, loss_terms = None, {}
        if labels is not None:
            loss_terms = self._loss(
                text_state,
                speech_state,
                labels,
                outputs.layer_weights,
                attention_mask,
                num_items_in_batch,
                num_positions_in_batch,
            )
        else:
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            next_is_speech = input_ids[:, keep] >= self.config.speech_marker_id
            logits = self._joint_logits(text_state[:, keep], speech_state[:, keep], next_is_speech)

        return SmolTolkCausalLMOutputWithPast(
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            layer_weights=outputs.layer_weights if output_layer_weights else None,
            **{_OUTPUT_CACHE_FIELD: getattr(outputs, _OUTPUT_CACHE_FIELD)},
            **loss_terms,
        )

    def create_masks_for_generate(self, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor | None:
        """
        `generate()` hook that prepares the attention masks before the forward when the cache is static. The input
        adapter's mask follows the speech spans, which only the ids tell, so the 2D padding mask is passed through
        and the forward builds both masks.
        """
        return attention_mask

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs: Any) -> dict[str, Any]:
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # The input adapter's span mask needs where the trailing speech span of the cached prefix began; it is
        # recomputed from the full ids each step so it survives beam reordering and batch selection.
        past_length = input_ids.shape[1] - model_inputs["input_ids"].shape[1]
        if past_length > 0:
            model_inputs["speech_span_start"] = trailing_speech_span_start(
                input_ids[:, :past_length], self.config.speech_token_offset
            )
        return model_inputs

    @classmethod
    def from_text_model(
        cls, text_model: nn.Module | str, num_speech_units: int = 500, **config_overrides: Any
    ) -> "SmolTolkForCausalLM":
        """
        Builds a SmolTolk from a Llama-architecture text LM (a model object or a local path / Hub id). Every
        backbone weight is copied bit for bit under the same module name; the speech parts are freshly initialised.
        The backbone's RoPE base is kept, so the result reproduces the text LM's logits on text; pass
        `rope_parameters={"rope_type": "default", "rope_theta": 100000.0}` to follow the paper's training setup.
        With layer pooling on, `pooling_norm` defaults to `NEW_MODEL_POOLING_NORM` (`"rmsnorm"`), and
        `speech_embedding_scale` to `NEW_MODEL_SPEECH_EMBEDDING_SCALE` (10); pass `pooling_norm="none",
        speech_embedding_scale=1.0` for the authors' exact architecture. The attention implementation is the text
        model's unless `attn_implementation` is passed.
        """
        if isinstance(text_model, str):
            text_model = LlamaForCausalLM.from_pretrained(text_model)
        text_config = getattr(text_model, "config", None)
        if getattr(text_config, "model_type", None) != "llama" or not hasattr(text_model, "model"):
            raise ValueError(
                "from_text_model needs a Llama-architecture causal LM (e.g. SmolLM / SmolLM2 as LlamaForCausalLM), "
                f"got {type(text_model).__name__} with model_type={getattr(text_config, 'model_type', None)!r}."
            )
        if config_overrides.get("use_layer_pooling", True):
            config_overrides.setdefault("pooling_norm", NEW_MODEL_POOLING_NORM)
        config_overrides.setdefault("speech_embedding_scale", NEW_MODEL_SPEECH_EMBEDDING_SCALE)
        # Backbone fields only: `model_type`, `architectures` and friends describe the text LM, not SmolTolk.
        config = SmolTolkConfig(
            **{**shared_fields(text_config, SmolTolkConfig), "num_speech_units": num_speech_units, **config_overrides}
        )
        if "attn_implementation" not in config_overrides:
            config._attn_implementation = text_config._attn_implementation
        dtype = next(text_model.parameters()).dtype
        with init.no_init_weights():  # the backbone is copied below: initialise only the new parts
            model = cls(config)
        source = text_model.state_dict()
        missing, unexpected = model.load_state_dict(source, strict=False)
        if unexpected:
            raise ValueError(f"Text model weights with no place in SmolTolk: {unexpected}")
        backbone_missing = [k for k in missing if k.startswith(BACKBONE_PARAMETER_PREFIXES) and k != "lm_head.weight"]
        if backbone_missing:
            raise ValueError(f"The text model lacks backbone weights: {backbone_missing}")
        if not config.tie_word_embeddings and "lm_head.weight" in missing:
            raise ValueError("The text model has untied embeddings but no lm_head weight.")
        for name, module in model.named_modules():
            own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
            if own and all(key in source for key in own):
                module._is_hf_initialized = True
        model.init_weights()
        model.to(dtype)
        return model


__all__ = [
    "SmolTolkPreTrainedModel",
    "SmolTolkModel",
    "SmolTolkForCausalLM",
    "SmolTolkLayerPooling",
    "SmolTolkInputAdapter",
    "SmolTolkModelOutputWithPast",
    "SmolTolkCausalLMOutputWithPast",
    "trailing_speech_span_start",
]
