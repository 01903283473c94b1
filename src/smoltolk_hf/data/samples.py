"""Training samples built on the fly: speech-only, text-only and interleaved text-speech.

Each builder turns one random generator into one packed sample of exactly `context_length` joint ids
(paper sections 3.2 and 4.1, DESIGN "Training recipe"), with no padding:

1. pick a start position uniformly over the dataset's length units (tokens; characters for untokenized
   text; words for interleaved data), so every token is equally likely to be seen;
2. encode the document holding that position from there on, then the following documents in dataset
   order (wrapping around at the end), each closed by its end token;
3. crop the stream at `context_length`.

A sample is a pure function of the generator it is given: the mixture derives one generator per sample
index, which makes it deterministic, splittable across ranks and workers, and resumable without replay.
Labels equal the input ids except the modality markers and the speech pad (-100): those are never targets.

Dataset formats (`datasets.Dataset`):
- speech (from the speech tokenizer): `units` (deduplicated unit ids in `[0, N)`), `durations` (frames per
  unit), `words`, `word_end_times` (seconds; empty when not aligned), `frame_rate` (Hz);
- text: `input_ids` (pre-tokenized) or `text` (tokenized on the fly).
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import NamedTuple, Protocol

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

IGNORE_INDEX = -100


class TokenLayout(Protocol):
    """The joint id layout of DESIGN "Token space"; `SmolTolkConfig` is one."""

    vocab_size: int  # V: text ids are [0, V)
    num_speech_units: int  # N
    text_marker_id: int  # V
    speech_marker_id: int  # V + 1
    speech_token_offset: int  # V + 2: unit u has id V + 2 + u
    speech_eos_id: int  # V + 2 + N, also speech BOS
    speech_pad_id: int  # V + 3 + N, the largest joint id


class TextTokenizer(Protocol):
    """What the builders need from a (Hugging Face) text tokenizer."""

    eos_token_id: int | None

    def __call__(self, text: list[str], add_special_tokens: bool = ...) -> dict: ...


def _plain_layout(layout: TokenLayout) -> TokenLayout:
    """A copy of `layout` with plain int attributes: config properties are slow to read in hot loops."""
    return SimpleNamespace(**{name: int(getattr(layout, name)) for name in TokenLayout.__annotations__})


def labels_from_ids(input_ids: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Labels for `input_ids`: the ids themselves, with markers and speech pad set to -100."""
    never_targets = torch.tensor([layout.text_marker_id, layout.speech_marker_id, layout.speech_pad_id])
    labels = input_ids.clone()
    labels[torch.isin(input_ids, never_targets)] = IGNORE_INDEX
    return labels


def word_unit_bounds(durations: np.ndarray, word_end_times: np.ndarray, frame_rate: float) -> np.ndarray:
    """Where each word's units start in the deduplicated unit sequence: word `w` is `units[b[w]:b[w + 1]]`.

    A word's speech runs from the previous word's end time (0 for the first word) to its own end time.
    A deduplicated unit belongs to the word whose span holds its first frame, so consecutive words
    partition the units: a run of words is one contiguous slice of the (already collapsed) units, and no
    unit is duplicated or repeated across a word boundary. Units after the last word (trailing silence)
    belong to no word.
    """
    durations = np.asarray(durations)
    first_frames = np.cumsum(durations) - durations
    end_frames = np.rint(np.asarray(word_end_times, dtype=np.float64) * frame_rate)
    bounds = np.searchsorted(first_frames, end_frames, side="left")
    # Alignments are not always monotonic; a word that ends before its predecessor gets no units.
    return np.concatenate([[0], np.maximum.accumulate(bounds)])


class Run(NamedTuple):
    """Words `[start, end)` of an utterance, given as `modality` ("text" or "speech")."""

    modality: str
    start: int
    end: int


def plan_runs(
    num_words: int,
    start: int,
    rng: np.random.Generator,
    text_words: tuple[int, int] = (10, 30),
    speech_words: tuple[int, int] = (5, 15),
) -> list[Run]:
    """Alternating text and speech runs covering words `[start, num_words)`, first modality at random.

    Run lengths are uniform in the inclusive ranges; only the last run can be shorter (the utterance ends).
    """
    ranges = {"text": text_words, "speech": speech_words}
    modality = "text" if rng.random() < 0.5 else "speech"
    runs = []
    while start < num_words:
        low, high = ranges[modality]
        end = min(start + int(rng.integers(low, high + 1)), num_words)
        runs.append(Run(modality, start, end))
        start, modality = end, "speech" if modality == "text" else "text"
    return runs


def _list_column(rows: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as (flat values, offsets): row `i` is `values[offsets[i]:offsets[i + 1]]`."""
    column = rows.column(name).combine_chunks()
    offsets = column.offsets.to_numpy()
    return column.flatten().to_numpy(zero_copy_only=False), offsets - offsets[0]


def _join_documents(values: np.ndarray, offsets: np.ndarray, end_id: int, skip: int) -> np.ndarray:
    """Documents `values[offsets[i]:offsets[i+1]]`, each followed by `end_id`, without the first `skip` ids."""
    return np.insert(values.astype(np.int64), offsets[1:], end_id)[skip:]


def _check_id_column(rows: datasets.Dataset, column: str, limit: int, builder: str) -> None:
    """Refuses a list column of `rows` (arrow format) whose values are not integers in `[0, limit)`, or whose
    lists are all empty, naming the first bad row: a unit of `N` or more would silently become the speech end
    token, pad or a text id, so nothing is clipped or cast."""
    values = rows[column]
    value_type = values.type.value_type
    flat = pc.list_flatten(values)
    if len(flat) == 0:
        raise ValueError(
            f"{builder}: every row of column {column!r} is an empty list ({len(rows)} rows), so every sample would "
            "hold only end tokens; check that the dataset was tokenized (smoltolk tokenize)."
        )
    if not pa.types.is_integer(value_type):
        first = next(i for i, row in enumerate(values.to_pylist()) if row)
        raise ValueError(
            f"{builder}: column {column!r} holds {value_type} values (row {first}: {values[first].as_py()[:8]}); "
            f"it must hold integer ids in [0, {limit}). Values are never truncated: fix or cast the column."
        )
    low, high = pc.min_max(flat).values()
    if low.as_py() >= 0 and high.as_py() < limit:
        return
    column_array = values.combine_chunks()
    offsets = column_array.offsets.to_numpy()
    ids = column_array.flatten().to_numpy(zero_copy_only=False)
    bad = int(np.flatnonzero((ids < 0) | (ids >= limit))[0])
    row = int(np.searchsorted(offsets - offsets[0], bad, side="right")) - 1
    raise ValueError(
        f"{builder}: row {row} of column {column!r} holds {int(ids[bad])}, outside [0, {limit}) "
        f"(this dataset's values range over [{low.as_py()}, {high.as_py()}]); "
        "was it tokenized with another codebook or text tokenizer than this model's?"
    )


class PackedSampleBuilder:
    """Packs documents of one dataset into samples of exactly `context_length` ids (see module docstring).

    Subclasses say which columns they read, how long each document is, how a block of rows is encoded,
    and which ids open every sample.
    """

    columns: tuple[str, ...] = ()
    prefix: tuple[int, ...] = ()

    def __init__(self, dataset: datasets.Dataset, layout: TokenLayout, context_length: int = 2048):
        missing = [name for name in self.columns if name not in dataset.column_names]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs the column(s) {missing}; the dataset has {dataset.column_names}."
            )
        if len(dataset) == 0:
            raise ValueError(f"{type(self).__name__} got an empty dataset.")
        if context_length < len(self.prefix) + 1:
            raise ValueError(
                f"context_length={context_length} is too short for one sample (needs >= {len(self.prefix) + 1})."
            )
        self.layout = _plain_layout(layout)
        self.context_length = context_length
        self._rows = dataset.select_columns(list(self.columns)).with_format("arrow")
        for column, limit in self._id_columns().items():
            _check_id_column(self._rows, column, limit, type(self).__name__)
        lengths = self._document_lengths(self._rows)
        self._cumulative = np.cumsum(lengths)
        self.size = int(self._cumulative[-1])  # total length units; the default mixture weight
        if self.size == 0:
            raise ValueError(f"{type(self).__name__} got a dataset with no usable documents.")
        self._usable = lengths > 0
        # Ids encoded and rows read so far, with a one-row prior of one id per length unit. Blocks are
        # sized from this rate so that little is encoded and thrown away; they never change a sample.
        self._ids_read, self._rows_read = self.size / len(lengths), 1

    def _id_columns(self) -> dict[str, int]:
        """The id columns this builder reads, each with the bound its values must stay under."""
        return {}

    def _document_lengths(self, rows: datasets.Dataset) -> np.ndarray:
        """Length of each document in the units `start` positions are drawn in; 0 marks a skipped row."""
        raise NotImplementedError

    def _encode(self, rows: pa.Table, start: int, rng: np.random.Generator) -> np.ndarray:
        """Joint ids of consecutive usable `rows`, each closed by its end token; the first starts at
        position `start` of its length units."""
        raise NotImplementedError

    def build(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One packed sample drawn with `rng`: `input_ids` and `labels`, both `[context_length]` int64."""
        position = int(rng.integers(self.size))
        row = int(np.searchsorted(self._cumulative, position, side="right"))
        start = position - (int(self._cumulative[row - 1]) if row else 0)
        pieces, filled = [np.array(self.prefix, dtype=np.int64)], len(self.prefix)
        while filled < self.context_length:  # every usable row adds >= 1 id, so this ends
            needed_rows = math.ceil((self.context_length - filled) * self._rows_read / self._ids_read) + 1
            stop = min(row + min(needed_rows, 64), len(self._usable))
            usable = self._usable[row:stop]
            if usable.any():
                rows = self._rows[row:stop]
                pieces.append(self._encode(rows if usable.all() else rows.filter(pa.array(usable)), start, rng))
                filled += len(pieces[-1])
                self._ids_read, self._rows_read = self._ids_read + len(pieces[-1]), self._rows_read + stop - row
                start = 0
            row = stop % len(self._usable)
        input_ids = torch.from_numpy(np.concatenate(pieces)[: self.context_length])
        return {"input_ids": input_ids, "labels": labels_from_ids(input_ids, self.layout)}


class SpeechSampleBuilder(PackedSampleBuilder):
    """Speech-only samples: `<|speech|>`, then crops of utterances' units, speech end token between them.

    Units are taken as stored: the speech tokenizer already collapses adjacent repeats.
    """

    columns = ("units",)

    def __init__(self, dataset: datasets.Dataset, layout: TokenLayout, context_length: int = 2048):
        self.prefix = (layout.speech_marker_id,)
        super().__init__(dataset, layout, context_length)

    def _id_columns(self) -> dict[str, int]:
        return {"units": self.layout.num_speech_units}

    def _document_lengths(self, rows: datasets.Dataset) -> np.ndarray:
        return pc.list_value_length(rows["units"]).to_numpy(zero_copy_only=False) + 1  # + end token

    def _encode(self, rows: pa.Table, start: int, rng: np.random.Generator) -> np.ndarray:
        units, offsets = _list_column(rows, "units")
        return _join_documents(units + self.layout.speech_token_offset, offsets, self.layout.speech_eos_id, start)


class TextSampleBuilder(PackedSampleBuilder):
    """Text-only samples: crops of tokenized documents with the text EOS between them.

    Reads `input_ids` when the dataset has it (exact uniform start over tokens); otherwise tokenizes
    `text` on the fly with `tokenizer` (the start is drawn over characters and mapped proportionally).
    `eos_id` defaults to the tokenizer's EOS.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        layout: TokenLayout,
        tokenizer: TextTokenizer | None = None,
        context_length: int = 2048,
        eos_id: int | None = None,
    ):
        self.columns = ("input_ids",) if "input_ids" in dataset.column_names else ("text",)
        if self.columns == ("text",) and tokenizer is None:
            raise ValueError(
                "TextSampleBuilder needs a tokenizer for a dataset with a 'text' column and no 'input_ids'."
            )
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id if eos_id is None and tokenizer is not None else eos_id
        if self.eos_id is None or not 0 <= self.eos_id < layout.vocab_size:
            raise ValueError(f"TextSampleBuilder needs a text EOS id in [0, {layout.vocab_size}), got {self.eos_id}.")
        super().__init__(dataset, layout, context_length)

    def _id_columns(self) -> dict[str, int]:
        return {"input_ids": self.layout.vocab_size} if self.columns == ("input_ids",) else {}

    def _document_lengths(self, rows: datasets.Dataset) -> np.ndarray:
        if self.columns == ("input_ids",):
            lengths = pc.list_value_length(rows["input_ids"])
        else:
            lengths = pc.utf8_length(rows["text"])
        return lengths.to_numpy(zero_copy_only=False) + 1  # + EOS

    def _encode(self, rows: pa.Table, start: int, rng: np.random.Generator) -> np.ndarray:
        if self.columns == ("input_ids",):
            values, offsets = _list_column(rows, "input_ids")
        else:
            texts = rows.column("text").to_pylist()
            encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            values = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64)
            offsets = np.cumsum([0] + [len(ids) for ids in encoded])
            start = start * (len(encoded[0]) + 1) // (len(texts[0]) + 1)  # characters -> tokens
        return _join_documents(values, offsets, self.eos_id, start)


class InterleavedSampleBuilder(PackedSampleBuilder):
    """Interleaved text-speech samples from word-aligned utterances (paper section 4.3).

    From its start word, each utterance alternates runs of `text_words` words as text and `speech_words`
    words as speech (inclusive ranges), first modality at random. Every run opens with the marker of its
    modality, so there is a marker at every switch (and at each utterance's first run). A text run is
    its words joined by spaces, with a leading space unless it starts the utterance (as BPE tokenizers
    expect mid-text words), tokenized with `tokenizer`; a speech run is its words' units (see
    `word_unit_bounds`). An utterance ends with the end token of its last run's modality.

    Utterances whose `word_end_times` is empty or does not match `words` are left out (with a warning).
    """

    columns = ("units", "durations", "words", "word_end_times", "frame_rate")

    def __init__(
        self,
        dataset: datasets.Dataset,
        layout: TokenLayout,
        tokenizer: TextTokenizer,
        context_length: int = 2048,
        text_words: tuple[int, int] = (10, 30),
        speech_words: tuple[int, int] = (5, 15),
    ):
        for name, (low, high) in (("text_words", text_words), ("speech_words", speech_words)):
            if not 1 <= low <= high:
                raise ValueError(
                    f"{name} must be an inclusive range (low, high) with 1 <= low <= high, got {(low, high)}."
                )
        if tokenizer.eos_token_id is None:
            raise ValueError("InterleavedSampleBuilder needs a tokenizer with an EOS token.")
        self.tokenizer, self.text_words, self.speech_words = tokenizer, text_words, speech_words
        super().__init__(dataset, layout, context_length)

    def _id_columns(self) -> dict[str, int]:
        return {"units": self.layout.num_speech_units}

    def _document_lengths(self, rows: datasets.Dataset) -> np.ndarray:
        num_words = pc.list_value_length(rows["words"]).to_numpy(zero_copy_only=False)
        num_ends = pc.list_value_length(rows["word_end_times"]).to_numpy(zero_copy_only=False)
        aligned = (num_ends == num_words) & (num_words > 0)
        if not aligned.all():
            warnings.warn(
                f"{int((~aligned).sum())} of {len(aligned)} utterances have no word alignment "
                "and are left out of interleaved samples.",
                stacklevel=3,
            )
        return np.where(aligned, num_words, 0)

    def _encode(self, rows: pa.Table, start: int, rng: np.random.Generator) -> np.ndarray:
        layout = self.layout
        units, unit_offsets = _list_column(rows, "units")
        durations, _ = _list_column(rows, "durations")
        ends, end_offsets = _list_column(rows, "word_end_times")
        words, frame_rates = rows.column("words").to_pylist(), rows.column("frame_rate").to_pylist()

        utterances = []  # (runs, unit ids, word -> unit bounds) per row
        for i, utterance_words in enumerate(words):
            first_word = start if i == 0 else 0
            unit_slice = slice(unit_offsets[i], unit_offsets[i + 1])
            bounds = word_unit_bounds(durations[unit_slice], ends[end_offsets[i] : end_offsets[i + 1]], frame_rates[i])
            runs = plan_runs(len(utterance_words), first_word, rng, self.text_words, self.speech_words)
            utterances.append((runs, units[unit_slice] + layout.speech_token_offset, bounds))
        # One tokenizer call for all text runs of the block.
        texts = [
            (" " if run.start else "") + " ".join(utterance_words[run.start : run.end])
            for (runs, _, _), utterance_words in zip(utterances, words)
            for run in runs
            if run.modality == "text"
        ]
        tokenized = iter(self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])

        pieces = []
        for runs, speech_ids, bounds in utterances:
            for run in runs:
                if run.modality == "text":
                    pieces += [[layout.text_marker_id], next(tokenized)]
                else:
                    pieces += [[layout.speech_marker_id], speech_ids[bounds[run.start] : bounds[run.end]]]
            pieces.append([self.tokenizer.eos_token_id if runs[-1].modality == "text" else layout.speech_eos_id])
        return np.concatenate([np.asarray(piece, dtype=np.int64) for piece in pieces])
