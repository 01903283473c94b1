"""SmolTolkProcessor: text, audio, speech units and interleaved segments <-> joint `input_ids`.

Joint id layout (see `SmolTolkConfig`), with `V` the text vocabulary size and `N` speech units:
`V` = `<|text|>` marker, `V + 1` = `<|speech|>` marker, `V + 2 + u` = speech unit `u`,
`V + 2 + N` = speech end-of-utterance, `V + 3 + N` = speech pad.

Sequence conventions:
- a marker is inserted at every modality change (`<|speech|>` before speech that follows text,
  `<|text|>` before text that follows speech);
- every sequence starts with the text tokenizer's BOS if it has one (SmolLM2 has none); a
  sequence that begins with speech then starts with `<|speech|>`, so its first unit is
  predicted by the speech head like every other unit. Text at the start needs no marker: text
  is the backbone's native modality;
- adjacent segments of the same modality are simply concatenated (no marker between them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PushToHubMixin

from .configuration_smoltolk import JointIdLayout
from .tokenization_speech import SpeechTokenizer

PROCESSOR_CONFIG_NAME = "processor_config.json"
SPEECH_TOKENIZER_SUBFOLDER = "speech_tokenizer"
# Keyword arguments transformers' loaders (AutoProcessor, pipeline) add that are not Hub download options.
_LOADER_ONLY_KWARGS = ("code_revision", "_from_auto", "_from_pipeline")

Segment = tuple[str, Any]


def _is_int_sequence(value: Any) -> bool:
    """Speech given as unit ids: a 1-D integer array/tensor, or a list of Python ints."""
    if isinstance(value, torch.Tensor):
        return value.ndim == 1 and not value.dtype.is_floating_point and value.dtype != torch.bool
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and np.issubdtype(value.dtype, np.integer)
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    )


class SmolTolkProcessor(JointIdLayout, PushToHubMixin):
    """Wraps a text tokenizer and a `SpeechTokenizer` and speaks SmolTolk's joint id layout.

    A plain class rather than a transformers `ProcessorMixin`: the mixin saves and loads every
    component through transformers' Auto classes and checks their types, and the speech
    tokenizer (HuBERT + k-means) is not a transformers class, so both `save_pretrained` and
    `from_pretrained` would have to be overridden anyway. The method names are the usual ones,
    `push_to_hub` comes from transformers' `PushToHubMixin`, and after `register_for_auto_class()`
    a saved folder carries this file as remote code, so it loads with
    `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` where this package is not installed.

    Args:
        tokenizer: the backbone's text tokenizer.
        speech_tokenizer: turns audio into units; optional when only unit ids are processed.
        vocab_size: the model's text vocabulary size `V` (`config.vocab_size`); defaults to
            `len(tokenizer)`.
        num_speech_units: `N` (`config.num_speech_units`); defaults to `speech_tokenizer.n_units`.
    """

    _auto_class: str | None = None
    # What `__call__` returns, first the main input (read by the Trainer when it is the `processing_class`).
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        speech_tokenizer: SpeechTokenizer | None = None,
        vocab_size: int | None = None,
        num_speech_units: int | None = None,
    ):
        vocab_size = len(tokenizer) if vocab_size is None else vocab_size
        if num_speech_units is None:
            if speech_tokenizer is None:
                raise ValueError("give num_speech_units or a speech_tokenizer")
            num_speech_units = speech_tokenizer.n_units
        if speech_tokenizer is not None and speech_tokenizer.n_units != num_speech_units:
            raise ValueError(f"speech tokenizer has {speech_tokenizer.n_units} units, the model {num_speech_units}")
        if len(tokenizer) > vocab_size:
            raise ValueError(f"text tokenizer has {len(tokenizer)} tokens, more than vocab_size={vocab_size}")
        self.tokenizer = tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.vocab_size = vocab_size
        self.num_speech_units = num_speech_units

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Makes `save_pretrained` ship this file (and its relative imports) with an `auto_map` entry for
        `auto_class`, as transformers' own classes do; AutoProcessor also calls it when loading remote code."""
        cls._auto_class = auto_class

    @classmethod
    def from_config(
        cls, tokenizer: PreTrainedTokenizerBase, speech_tokenizer: SpeechTokenizer | None, config: Any
    ) -> SmolTolkProcessor:
        """Takes the id layout from a model config (`vocab_size`, `num_speech_units`)."""
        return cls(tokenizer, speech_tokenizer, vocab_size=config.vocab_size, num_speech_units=config.num_speech_units)

    # --- id layout (the id properties come from JointIdLayout) --------------------------------

    @property
    def pad_token_id(self) -> int:
        """Batch padding id: the text tokenizer's pad, else its EOS, else the speech pad."""
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
        return self.speech_pad_id

    def _id_layout(self) -> dict[str, int]:
        return {
            "vocab_size": self.vocab_size,
            "num_speech_units": self.num_speech_units,
            "text_marker_id": self.text_marker_id,
            "speech_marker_id": self.speech_marker_id,
            "speech_token_offset": self.speech_token_offset,
            "speech_eos_id": self.speech_eos_id,
            "speech_pad_id": self.speech_pad_id,
        }

    # --- encoding ------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        units: Any = None,
        segments: list[Segment] | list[list[Segment]] | None = None,
        sampling_rate: int | None = None,
        add_eos: bool = False,
        padding: bool = True,
        padding_side: str = "right",
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Encodes exactly one of `text`, `audio`, `units` or interleaved `segments`.

        Args:
            text: a string or a list of strings.
            audio: one waveform/path or a list of them (anything `SpeechTokenizer` accepts).
            units: one sequence of unit ids in `[0, N)` or a list of them.
            segments: `[("text", str), ("speech", audio_or_units), ...]` for one sample, or a list
                of such lists. Speech given as integers (list of ints, integer array/tensor) is
                unit ids; floats or a path are audio (convert integer PCM to float first).
            sampling_rate: rate of array audio (default 16 kHz).
            add_eos: end each sequence with the EOS of its last modality (speech EOS after
                speech, the text tokenizer's EOS after text).
            padding: pad a batch to its longest sequence (required for tensors).
            padding_side: "right" or "left".
            return_tensors: None (lists), "pt" or "np".

        Returns:
            `BatchFeature` with `input_ids` and `attention_mask`; unbatched lists for a single
            input without `return_tensors`.
        """
        given = {
            name: value
            for name, value in (("text", text), ("audio", audio), ("units", units), ("segments", segments))
            if value is not None
        }
        if len(given) != 1:
            raise ValueError(f"pass exactly one of text, audio, units or segments (got {sorted(given) or 'none'})")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        ((kind, value),) = given.items()
        if isinstance(value, (list, tuple)) and len(value) == 0:
            raise ValueError(f"{kind}=[] is empty: pass one input or a non-empty list of them")
        if kind == "text":
            is_batch = not isinstance(value, str)
            batch = [[("text", t)] for t in (value if is_batch else [value])]
        elif kind == "audio":
            is_batch = isinstance(value, (list, tuple))
            batch = [[("speech", u)] for u in self._tokenize_audio(list(value) if is_batch else [value], sampling_rate)]
        elif kind == "units":
            is_batch = not _is_int_sequence(value)
            batch = [[("speech", u)] for u in (value if is_batch else [value])]
        else:
            is_batch = len(value) > 0 and isinstance(value[0], list)
            batch = [list(s) for s in (value if is_batch else [value])]
        if kind != "audio":
            batch = self._tokenize_speech_segments(batch, sampling_rate)

        input_ids = [self._encode_segments(sample, add_eos) for sample in batch]
        attention_mask = [[1] * len(ids) for ids in input_ids]
        if padding:
            longest = max(len(ids) for ids in input_ids)
            for ids, mask in zip(input_ids, attention_mask):
                fill = longest - len(ids)
                if padding_side == "right":
                    ids.extend([self.pad_token_id] * fill)
                    mask.extend([0] * fill)
                else:
                    ids[:0] = [self.pad_token_id] * fill
                    mask[:0] = [0] * fill
        elif return_tensors is not None and len({len(ids) for ids in input_ids}) > 1:
            raise ValueError("sequences of different lengths need padding=True to become tensors")
        if not is_batch and return_tensors is None:
            input_ids, attention_mask = input_ids[0], attention_mask[0]
        return BatchFeature({"input_ids": input_ids, "attention_mask": attention_mask}, tensor_type=return_tensors)

    def _tokenize_audio(self, audio: list[Any], sampling_rate: int | None) -> list[np.ndarray]:
        if self.speech_tokenizer is None:
            raise ValueError("this processor has no speech tokenizer: pass speech as unit ids")
        return self.speech_tokenizer(audio, sampling_rate=sampling_rate)

    def _tokenize_speech_segments(self, batch: list[list[Segment]], sampling_rate: int | None) -> list[list[Segment]]:
        """Replaces audio in speech segments by units, running the speech tokenizer once for the batch."""
        positions = [
            (i, j)
            for i, sample in enumerate(batch)
            for j, (modality, content) in enumerate(sample)
            if modality == "speech" and not _is_int_sequence(content)
        ]
        if positions:
            units = self._tokenize_audio([batch[i][j][1] for i, j in positions], sampling_rate)
            for (i, j), u in zip(positions, units):
                batch[i][j] = ("speech", u)
        return batch

    def _encode_segments(self, segments: list[Segment], add_eos: bool) -> list[int]:
        if not segments:
            raise ValueError("a sample needs at least one segment")
        ids = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        previous = None
        for index, segment in enumerate(segments):
            if not (isinstance(segment, (tuple, list)) and len(segment) == 2):
                raise ValueError(f"segment {index} must be a (modality, content) pair, got {segment!r}")
            modality, content = segment
            if modality == "text":
                if not isinstance(content, str) or not content:
                    raise ValueError(f"segment {index}: text must be a non-empty string")
                if previous == "speech":
                    ids.append(self.text_marker_id)
                ids.extend(self.tokenizer(content, add_special_tokens=False)["input_ids"])
            elif modality == "speech":
                units = np.asarray(content.cpu() if isinstance(content, torch.Tensor) else content, dtype=np.int64)
                if units.ndim != 1 or len(units) == 0:
                    raise ValueError(f"segment {index}: speech units must be a non-empty 1-D sequence")
                if units.min() < 0 or units.max() >= self.num_speech_units:
                    raise ValueError(f"segment {index}: speech units must lie in [0, {self.num_speech_units})")
                if previous != "speech":
                    ids.append(self.speech_marker_id)
                ids.extend((units + self.speech_token_offset).tolist())
            else:
                raise ValueError(f"segment {index}: modality must be 'text' or 'speech', got {modality!r}")
            previous = modality
        if add_eos:
            eos = self.speech_eos_id if previous == "speech" else self.tokenizer.eos_token_id
            if eos is None:
                raise ValueError("add_eos=True but the text tokenizer has no EOS token")
            ids.append(eos)
        return ids

    # --- decoding ------------------------------------------------------------------------------

    def decode(
        self, token_ids: Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[Segment]:
        """Joint ids -> `[("text", str) | ("speech", unit ids in [0, N)), ...]`.

        Markers, speech pads and speech EOS are dropped (a speech EOS still ends its segment);
        text special tokens follow `skip_special_tokens`; text that decodes to "" is dropped.
        """
        ids = torch.as_tensor(token_ids).tolist() if not isinstance(token_ids, list) else token_ids
        runs: list[tuple[str, list[int]]] = []
        for position, token_id in enumerate(ids):
            if token_id < 0:
                raise ValueError(
                    f"id {token_id} at position {position} is not a joint id"
                    + (
                        " (-100 marks ignored label positions: decode input ids, or labels[labels != -100])"
                        if token_id == -100
                        else ""
                    )
                )
            if token_id < self.vocab_size:
                modality, value = "text", token_id
            elif self.speech_token_offset <= token_id < self.speech_eos_id:
                modality, value = "speech", token_id - self.speech_token_offset
            elif token_id in (self.text_marker_id, self.speech_marker_id, self.speech_pad_id):
                continue
            elif token_id == self.speech_eos_id:
                runs.append(("end", []))
                continue
            else:
                raise ValueError(f"id {token_id} at position {position} is outside the joint vocabulary")
            if not runs or runs[-1][0] != modality:
                runs.append((modality, []))
            runs[-1][1].append(value)

        segments: list[Segment] = []
        for modality, values in runs:
            if modality == "text":
                text = self.tokenizer.decode(values, skip_special_tokens=skip_special_tokens)
                if text:
                    segments.append(("text", text))
            elif modality == "speech":
                segments.append(("speech", np.asarray(values, dtype=np.int64)))
        return segments

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = True) -> list[list[Segment]]:
        """`decode` for each row of a batch."""
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in sequences]

    # --- persistence ---------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Writes the text tokenizer, `speech_tokenizer/` and `processor_config.json` (the id layout), and the
        processor's code after `register_for_auto_class()`. Other keyword arguments (passed by `push_to_hub`) are
        not used."""
        save_directory = os.fspath(save_directory)
        os.makedirs(save_directory, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        if self.speech_tokenizer is not None:
            self.speech_tokenizer.save_pretrained(os.path.join(save_directory, SPEECH_TOKENIZER_SUBFOLDER))
        config = {"processor_class": type(self).__name__, **self._id_layout()}
        if self._auto_class is not None:
            custom_object_save(self, save_directory, config=config)  # copies the code, adds config["auto_map"]
        with open(os.path.join(save_directory, PROCESSOR_CONFIG_NAME), "w") as f:
            json.dump(config, f, indent=2)

    @classmethod
    def from_pretrained(cls, pretrained_path: str | os.PathLike, **hub_kwargs: Any) -> SmolTolkProcessor:
        """Loads a folder written by `save_pretrained` or a Hub repo id (via `snapshot_download`, which gets the
        keyword arguments, e.g. `revision`, `token`, `cache_dir`). `trust_remote_code` goes to `AutoTokenizer`,
        which also reads the folder's model config: SmolTolk's, remote code where this package is not installed."""
        trust_remote_code = hub_kwargs.pop("trust_remote_code", None)
        for name in _LOADER_ONLY_KWARGS:
            hub_kwargs.pop(name, None)
        directory = os.fspath(pretrained_path)
        if not os.path.isdir(directory):
            from huggingface_hub import snapshot_download

            directory = snapshot_download(directory, **hub_kwargs)
        with open(os.path.join(directory, PROCESSOR_CONFIG_NAME)) as f:
            config = json.load(f)
        speech_directory = os.path.join(directory, SPEECH_TOKENIZER_SUBFOLDER)
        processor = cls(
            AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code),
            SpeechTokenizer.from_pretrained(speech_directory) if os.path.isdir(speech_directory) else None,
            vocab_size=config["vocab_size"],
            num_speech_units=config["num_speech_units"],
        )
        mismatched = {k: v for k, v in processor._id_layout().items() if config.get(k, v) != v}
        if mismatched:
            raise ValueError(
                f"{PROCESSOR_CONFIG_NAME} ids disagree with the layout derived from its sizes: {mismatched}"
            )
        return processor
