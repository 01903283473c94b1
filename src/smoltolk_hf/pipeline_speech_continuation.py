"""The `speech-continuation` pipeline: prompt SmolTolk with speech, text or both, get a speech or text continuation.

```python
from transformers import pipeline

pipe = pipeline("speech-continuation", model="path/to/smoltolk", processor=processor, vocoder=vocoder)
pipe({"audio": "prompt.wav"})                        # -> {"modality": "speech", "units": ..., "audio": ..., ...}
pipe("Once upon a time", continuation="speech")     # text prompt, spoken continuation
pipe([[3, 17, 42], [8, 8, 1]], batch_size=2)        # a batch of unit prompts
```

SmolTolk never switches modality on its own: the modality of every generated token is decided by the last input
token. The pipeline therefore generates one modality per prompt, the caller's choice (`continuation=`) or else the
prompt's last one, and appends the marker of the chosen modality when it differs from the prompt's.
"""

from __future__ import annotations

import os
from collections.abc import Sized
from queue import Queue
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, GenerationConfig, Pipeline
from transformers.generation.streamers import BaseStreamer
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.utils import logging

from .processing_smoltolk import SmolTolkProcessor, _is_int_sequence

logger = logging.get_logger(__name__)

TASK = "speech-continuation"
MODALITIES = ("speech", "text")
# The paper authors' sampling settings for each continuation modality.
DEFAULT_SAMPLING: dict[str, dict[str, Any]] = {
    "text": {"do_sample": True, "temperature": 0.4, "top_k": 50},
    "speech": {"do_sample": True, "temperature": 0.8, "top_k": 50},
}
# Settings that only mean something when sampling (generate() warns about them otherwise).
_SAMPLING_ONLY = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")
_PROMPT_KINDS = ("text", "audio", "units", "segments")


def _is_segment_list(value: Any) -> bool:
    """`[("text", str), ("speech", audio_or_units), ...]`: one interleaved prompt."""
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(s, (list, tuple)) and len(s) == 2 and isinstance(s[0], str) for s in value)
    )


def _is_single_prompt(value: Any) -> bool:
    """Whether `value` is one prompt; any other list is a batch (a list of ints or of segments is one prompt)."""
    return not isinstance(value, list) or not value or _is_int_sequence(value) or _is_segment_list(value)


def _as_prompt(prompt: Any) -> dict[str, Any]:
    """One prompt as `SmolTolkProcessor` keyword arguments (`text=`, `audio=`, `units=` or `segments=`)."""
    if isinstance(prompt, dict):
        kinds = [kind for kind in _PROMPT_KINDS if kind in prompt]
        extra = set(prompt) - {*_PROMPT_KINDS, "sampling_rate"}
        if len(kinds) != 1 or extra:
            raise ValueError(
                f"a prompt dict needs exactly one of {_PROMPT_KINDS} (plus an optional 'sampling_rate'), "
                f"got keys {sorted(prompt)}"
            )
        kind, value = kinds[0], prompt[kinds[0]]
    elif isinstance(prompt, str):
        kind, value = "text", prompt  # a file path must be given as {"audio": path} or a pathlib.Path
    elif isinstance(prompt, os.PathLike):
        kind, value = "audio", os.fspath(prompt)
    elif isinstance(prompt, (np.ndarray, torch.Tensor)):
        is_float = prompt.dtype.is_floating_point if isinstance(prompt, torch.Tensor) else prompt.dtype.kind == "f"
        kind, value = ("audio" if is_float else "units"), prompt
    elif _is_int_sequence(prompt):
        kind, value = "units", prompt
    elif _is_segment_list(prompt):
        kind, value = "segments", list(prompt)
    elif isinstance(prompt, (list, tuple)) and len(prompt) == 0:
        kind, value = "units", prompt
    else:
        raise ValueError(
            f"cannot read a prompt from {type(prompt).__name__}: pass text (str), audio (float array or tensor, "
            "pathlib.Path, or {'audio': path}), units (ints), or segments [('text', str), ('speech', ...), ...]"
        )
    if len(value) == 0:  # an empty string, unit list, waveform or segment list
        raise ValueError(f"the prompt is empty ({kind}): give at least one token of text or speech")
    out = {kind: value}
    if isinstance(prompt, dict) and "sampling_rate" in prompt:
        out["sampling_rate"] = prompt["sampling_rate"]
    return out


class SmolTolkStreamer(BaseStreamer):
    """Streams a SmolTolk generation as it happens: joint ids become `("speech", unit)` and `("text", str)` pieces.

    Pass it as `streamer=` to the pipeline or to `model.generate()` (batch size 1), then either iterate over it from
    another thread (like transformers' `TextIteratorStreamer`), or subclass it and override `on_piece`.

    Args:
        processor: the model's `SmolTolkProcessor` (it knows the id layout and the text tokenizer).
        skip_prompt: do not stream the prompt ids that `generate()` puts first.
        timeout: seconds the iterator waits for the next piece before raising `queue.Empty` (None: forever).
    """

    _end = object()

    def __init__(self, processor: SmolTolkProcessor, skip_prompt: bool = True, timeout: float | None = None):
        self.processor = processor
        self.skip_prompt = skip_prompt
        self.timeout = timeout
        self.queue: Queue = Queue()
        self._expect_prompt = True
        self._text_ids: list[int] = []
        self._text_sent = 0

    def put(self, value: torch.Tensor) -> None:
        """Called by `generate()` with the prompt first, then with each new token."""
        if value.ndim > 1 and value.shape[0] > 1:
            raise ValueError("SmolTolkStreamer streams one sequence: use batch size 1")
        if self._expect_prompt:
            self._expect_prompt = False
            if self.skip_prompt:
                return
        p = self.processor
        for token_id in value.reshape(-1).tolist():
            if p.speech_token_offset <= token_id < p.speech_eos_id:
                self._flush_text(final=True)
                self.on_piece("speech", token_id - p.speech_token_offset)
            elif token_id < p.vocab_size:
                self._text_ids.append(token_id)
                self._flush_text(final=False)
            # Markers, speech end and speech pad carry no content.

    def end(self) -> None:
        """Called by `generate()` when it finishes."""
        self._flush_text(final=True)
        self.queue.put(self._end)

    def on_piece(self, modality: str, piece: int | str) -> None:
        """Receives each piece: a unit id for speech, newly decoded characters for text. Queues it by default."""
        self.queue.put((modality, piece))

    def _flush_text(self, final: bool) -> None:
        if not self._text_ids:
            return
        # Decode the whole text run: token boundaries need not be character boundaries.
        text = self.processor.tokenizer.decode(self._text_ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return  # an incomplete multi-byte character; wait for the next token
        if len(text) > self._text_sent:
            self.on_piece("text", text[self._text_sent :])
        self._text_sent = len(text)
        if final:
            self._text_ids, self._text_sent = [], 0

    def __iter__(self) -> SmolTolkStreamer:
        return self

    def __next__(self) -> tuple[str, int | str]:
        item = self.queue.get(timeout=self.timeout)
        if item is self._end:
            raise StopIteration
        return item


class SpeechContinuationPipeline(Pipeline):
    """Continues a speech, text or interleaved prompt with SmolTolk, in speech or in text.

    Build it with `pipeline("speech-continuation", model=..., processor=..., vocoder=...)` (after `import
    smoltolk_hf`) or directly. `processor` is a `SmolTolkProcessor` or its folder / Hub id; when left out it is
    loaded from the model's folder. transformers' `pipeline()` only loads `ProcessorMixin` processors by itself,
    so the pipeline loads its processor itself and `pipeline()` passes a processor object or path through as is.

    Args:
        vocoder (`UnitVocoder`, *optional*):
            Turns speech continuations into 16 kHz audio (outputs then carry `audio` and `sampling_rate`); its unit
            count must match the model's.
        sampling (`dict[str, dict]`, *optional*):
            Generation settings per continuation modality, e.g. `{"speech": {"temperature": 0.7}}`, on top of
            `DEFAULT_SAMPLING` (the paper authors': temperature 0.4 / top-k 50 for text, 0.8 / top-k 50 for
            speech). Generation keyword arguments passed to the pipeline (`do_sample=False`, `temperature=...`,
            `max_new_tokens=...`, `streamer=...`) apply to both modalities and take precedence.

    Other init or call parameters: `continuation` (`"speech"`, `"text"` or None for the prompt's modality),
    `sampling_rate` (of array audio), `seed` (seeds torch before generating, for reproducible sampling),
    `batch_size`.
    """

    _load_processor = False  # a SmolTolkProcessor is not a ProcessorMixin, which pipeline() requires to load one
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=256)

    def __init__(
        self,
        model: Any,
        processor: SmolTolkProcessor | str | os.PathLike | None = None,
        vocoder: torch.nn.Module | None = None,
        **kwargs: Any,
    ):
        model_type = model.config.model_type
        if model_type != "smoltolk":
            raise ValueError(f"the {TASK} pipeline needs a SmolTolk model, got model_type={model_type!r}")
        processor = _resolve_processor(model, processor)
        check_processor_layout(processor, model.config)
        if vocoder is not None:
            vocoder.check_compatible(model.config.num_speech_units)
        self.vocoder = vocoder
        super().__init__(model=model, processor=processor, **kwargs)
        self._generation_defaults.setdefault("pad_token_id", processor.pad_token_id)

    def __call__(self, prompts: Any, **kwargs: Any) -> dict[str, Any] | list[dict[str, Any]]:
        """Continues one prompt or a list of prompts.

        Args:
            prompts: one prompt or a list of them. A prompt is text (`str`), audio (a float array/tensor at
                `sampling_rate`, a `pathlib.Path`, or `{"audio": path_or_array, "sampling_rate": sr}`), speech
                units (a list / integer array of unit ids in `[0, num_speech_units)`, or `{"units": ...}`), or
                interleaved segments (`[("text", str), ("speech", audio_or_units), ...]` or `{"segments": ...}`).
                A plain string is always text.
            continuation: `"speech"`, `"text"`, or None (default) to continue in the prompt's last modality.
            sampling, seed, sampling_rate, generation keyword arguments: see the class docstring.

        Returns:
            For each prompt a dict with `modality` and either `text` (text continuation) or `units` (speech: unit ids
            as an int64 array), plus `audio` (float32 array) and `sampling_rate` with a vocoder. A continuation stops
            at its modality's end token or after `max_new_tokens` (default 256), or at the model's context length.
        """
        if _is_single_prompt(prompts):
            prompts = _as_prompt(prompts)  # a list of ints or segments is one prompt, not a batch
        return super().__call__(prompts, **kwargs)

    def _sanitize_parameters(
        self,
        continuation: str | None = None,
        sampling_rate: int | None = None,
        sampling: dict[str, dict[str, Any]] | None = None,
        seed: int | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess_params: dict[str, Any] = {}
        if continuation is not None:
            if continuation not in MODALITIES:
                raise ValueError(f"continuation must be one of {MODALITIES} or None, got {continuation!r}")
            preprocess_params["continuation"] = continuation
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = sampling_rate
        forward_params = dict(generate_kwargs)
        if sampling is not None:
            unknown = set(sampling) - set(MODALITIES)
            if unknown:
                raise ValueError(f"sampling settings are per modality {MODALITIES}; unknown keys {sorted(unknown)}")
            forward_params["sampling"] = sampling
        if seed is not None:
            forward_params["seed"] = seed
        return preprocess_params, forward_params, {}

    def preprocess(
        self, prompt: Any, continuation: str | None = None, sampling_rate: int | None = None
    ) -> dict[str, torch.Tensor]:
        kwargs = {"sampling_rate": sampling_rate, **_as_prompt(prompt)}
        input_ids = self.processor(**kwargs, return_tensors="pt")["input_ids"]  # (1, prompt_len)
        config = self.model.config
        prompt_is_speech = int(input_ids[0, -1]) >= config.speech_marker_id
        to_speech = prompt_is_speech if continuation is None else continuation == "speech"
        if to_speech != prompt_is_speech:
            marker = config.speech_marker_id if to_speech else config.text_marker_id
            input_ids = torch.cat([input_ids, input_ids.new_tensor([[marker]])], dim=1)
        if input_ids.shape[1] >= config.max_position_embeddings:
            raise ValueError(
                f"the prompt is {input_ids.shape[1]} tokens long, which leaves no room to generate within the "
                f"model's context of {config.max_position_embeddings} tokens (max_position_embeddings); shorten it"
            )
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "continuation_is_speech": torch.tensor([to_speech]),
        }

    def _forward(
        self,
        model_inputs: dict[str, torch.Tensor],
        sampling: dict[str, dict[str, Any]] | None = None,
        seed: int | None = None,
        **generate_kwargs: Any,
    ) -> dict[str, torch.Tensor | None]:
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        to_speech = model_inputs["continuation_is_speech"]
        if seed is not None:
            torch.manual_seed(seed)
        # Prompts of a batch may continue in different modalities, each with its own sampling settings: one
        # generate() call per modality.
        groups = []
        for modality in MODALITIES:
            rows = (to_speech if modality == "speech" else ~to_speech).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            kwargs = self._generation_kwargs(modality, sampling, generate_kwargs, input_ids.shape[1])
            sequences = self.model.generate(input_ids=input_ids[rows], attention_mask=attention_mask[rows], **kwargs)
            groups.append((rows, sequences[:, input_ids.shape[1] :]))

        width = max(new.shape[1] for _, new in groups)
        generated = input_ids.new_full((len(input_ids), width), self.processor.pad_token_id)
        for rows, new in groups:
            generated[rows, : new.shape[1]] = new
        is_end = torch.isin(generated, torch.tensor(self._end_ids(generate_kwargs), device=generated.device))
        num_generated = torch.where(is_end.any(1), is_end.int().argmax(1), width)  # up to the first end token
        outputs = {"generated": generated, "num_generated": num_generated, "continuation_is_speech": to_speech}
        if self.vocoder is not None:
            outputs.update(self._vocode(generated, num_generated, to_speech))
        return outputs

    def _generation_kwargs(
        self,
        modality: str,
        sampling: dict[str, dict[str, Any]] | None,
        generate_kwargs: dict[str, Any],
        prompt_length: int,
    ) -> dict[str, Any]:
        """generate() kwargs: the caller's on top of the modality's sampling settings, capped at the context."""
        explicit = {**self._generate_kwargs, **generate_kwargs}
        requested = dict(generate_kwargs)
        if "generation_config" not in explicit:  # a full generation config is used as given
            defaults = {**DEFAULT_SAMPLING[modality], **(sampling or {}).get(modality, {})}
            if not explicit.get("do_sample", defaults.get("do_sample", False)):
                defaults = {k: v for k, v in defaults.items() if k not in _SAMPLING_ONLY}
            requested = {**defaults, **explicit}
        kwargs = self._prepare_generate_kwargs(requested)
        room = self.model.config.max_position_embeddings - prompt_length
        params = self._get_set_generation_params(kwargs)
        wanted = params.get("max_new_tokens") or params.get("max_length", 20) - prompt_length
        if wanted > room:
            logger.warning(f"Generating {room} tokens instead of {wanted}: the model's context ends there.")
            kwargs = self._prepare_generate_kwargs(requested, max_new_tokens=room)
        return kwargs

    def _end_ids(self, generate_kwargs: dict[str, Any]) -> list[int]:
        """Ids that end a continuation: the generation EOS ids (text EOS and speech end)."""
        config = generate_kwargs.get("generation_config") or self.model.generation_config
        eos = generate_kwargs.get("eos_token_id", config.eos_token_id)
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        return [*eos, self.model.config.speech_eos_id]

    def _vocode(
        self, generated: torch.Tensor, num_generated: torch.Tensor, to_speech: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Audio `(batch, samples)` and its lengths for the speech continuations that have at least one unit."""
        audio_lengths = torch.zeros(len(generated), dtype=torch.long)
        rows = (to_speech & (num_generated > 0)).nonzero().squeeze(1)
        if len(rows) == 0:
            return {"audio": torch.zeros(len(generated), 0), "audio_lengths": audio_lengths}
        device = next(self.vocoder.parameters()).device
        units = (generated[rows] - self.model.config.speech_token_offset).to(device)
        mask = torch.arange(units.shape[1], device=device)[None] < num_generated[rows].to(device)[:, None]
        # SmolTolk speaks deduplicated units: a vocoder with a duration predictor restores their lengths.
        waveform, lengths = self.vocoder(
            units.masked_fill(~mask, 0), attention_mask=mask, dur_prediction=self.vocoder.dur_predictor is not None
        )
        audio = torch.zeros(len(generated), waveform.shape[1], dtype=waveform.dtype)
        audio[rows.cpu()] = waveform.cpu()
        audio_lengths[rows.cpu()] = lengths.cpu()
        return {"audio": audio, "audio_lengths": audio_lengths}

    def postprocess(self, model_outputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        ids = model_outputs["generated"][0, : int(model_outputs["num_generated"][0])]
        segments = self.processor.decode(ids)
        if not bool(model_outputs["continuation_is_speech"][0]):
            return {"modality": "text", "text": "".join(text for _, text in segments)}
        units = np.concatenate([np.zeros(0, dtype=np.int64)] + [u for _, u in segments])
        output: dict[str, Any] = {"modality": "speech", "units": units}
        if self.vocoder is not None:
            output["audio"] = model_outputs["audio"][0, : int(model_outputs["audio_lengths"][0])].float().numpy()
            output["sampling_rate"] = self.vocoder.sampling_rate
        return output

    def get_iterator(
        self,
        inputs: Any,
        num_workers: int,
        batch_size: int,
        preprocess_params: dict[str, Any],
        forward_params: dict[str, Any],
        postprocess_params: dict[str, Any],
    ) -> PipelineIterator:
        if batch_size == 1:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        # transformers pads batches with the text tokenizer's pad id (which may not exist) on its padding side;
        # SmolTolk prompts are left-padded (generation appends on the right) with the processor's pad id.
        dataset_class = PipelineDataset if isinstance(inputs, Sized) else PipelineIterator
        dataset = dataset_class(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._left_pad)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _left_pad(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(item["input_ids"].shape[1] for item in items)
        pad_id = self.processor.pad_token_id

        def left_pad(key: str, value: int) -> torch.Tensor:
            return torch.cat([F.pad(item[key], (length - item[key].shape[1], 0), value=value) for item in items])

        return {
            "input_ids": left_pad("input_ids", pad_id),
            "attention_mask": left_pad("attention_mask", 0),
            "continuation_is_speech": torch.cat([item["continuation_is_speech"] for item in items]),
        }


def check_processor_layout(processor: SmolTolkProcessor, config: Any) -> None:
    """Raises a `ValueError` unless the processor speaks the model's id layout (text vocabulary and unit count)."""
    if (processor.vocab_size, processor.num_speech_units) != (config.vocab_size, config.num_speech_units):
        raise ValueError(
            f"the processor's id layout (vocab_size={processor.vocab_size}, num_speech_units="
            f"{processor.num_speech_units}) does not match the model's "
            f"({config.vocab_size}, {config.num_speech_units})"
        )


def _resolve_processor(model: Any, processor: SmolTolkProcessor | str | os.PathLike | None) -> SmolTolkProcessor:
    """The processor object, loaded from its path, or else from the model's own folder / Hub repo."""
    if processor is not None and not isinstance(processor, (str, os.PathLike)):
        return processor
    source = processor if processor is not None else model.name_or_path
    try:
        return SmolTolkProcessor.from_pretrained(source)
    except (OSError, ValueError) as error:
        if processor is not None:
            raise
        raise ValueError(
            f"no SmolTolkProcessor found with the model ({source!r}): pass processor= (a SmolTolkProcessor or its "
            "folder)"
        ) from error


def register_pipeline() -> None:
    """Registers the `speech-continuation` task with transformers' `pipeline()`; `import smoltolk_hf` calls it."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is not SpeechContinuationPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=SpeechContinuationPipeline, pt_model=AutoModelForCausalLM, type="multimodal"
        )


__all__ = [
    "DEFAULT_SAMPLING",
    "SmolTolkStreamer",
    "SpeechContinuationPipeline",
    "check_processor_layout",
    "register_pipeline",
]
