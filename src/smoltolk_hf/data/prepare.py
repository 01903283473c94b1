"""Audio files -> a `datasets` dataset of speech units (the `tokenize` data-preparation step).

Output columns (`UNIT_DATASET_COLUMNS`, a contract the sample builders rely on):

- `id` (str): utterance id;
- `units` (list[int]): deduplicated unit ids in `[0, N)`;
- `durations` (list[int]): frames each unit lasted, same length as `units`;
- `text` (str): transcript, "" if none;
- `words` (list[str]) and `word_end_times` (list[float], seconds): word alignment, empty if none;
- `frame_rate` (float): unit frames per second (25 Hz for TWIST's tokenizer).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import soundfile as sf
import torch
from datasets import Dataset, Features, List, Value, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from ..tokenization_speech import SpeechTokenizer

UNIT_DATASET_COLUMNS = ("id", "units", "durations", "text", "words", "word_end_times", "frame_rate")
UNIT_DATASET_FEATURES = Features(
    {
        "id": Value("string"),
        "units": List(Value("int32")),
        "durations": List(Value("int32")),
        "text": Value("string"),
        "words": List(Value("string")),
        "word_end_times": List(Value("float64")),
        "frame_rate": Value("float64"),
    }
)
_AUDIO_EXTENSIONS = {f".{name.lower()}" for name in sf.available_formats()}
_STATE_NAME = "state.json"


def read_audio_source(source: str | os.PathLike) -> list[dict[str, Any]]:
    """Lists the utterances of a folder of audio files or of a manifest.

    A folder is searched recursively for files libsndfile reads; ids are their paths relative to
    the folder, without extension. A manifest is JSONL (`.jsonl`/`.json`, one object per line) or
    CSV with a header, with columns `audio` (path, relative to the manifest's folder) and
    optionally `id`, `text`, `words` and `word_end_times` (lists in JSONL; whitespace-separated
    in CSV).
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        rows = []
        for root, _, files in os.walk(source):
            for name in files:
                if os.path.splitext(name)[1].lower() in _AUDIO_EXTENSIONS:
                    path = os.path.join(root, name)
                    rows.append({"id": os.path.splitext(os.path.relpath(path, source))[0], "audio": path})
        if not rows:
            raise ValueError(f"no audio files found under {source}")
        return sorted(rows, key=lambda row: row["id"])

    extension = os.path.splitext(source)[1].lower()
    with open(source, newline="") as f:
        if extension in (".jsonl", ".json"):
            records = [json.loads(line) for line in f if line.strip()]
        elif extension == ".csv":
            records = list(csv.DictReader(f))
        else:
            raise ValueError(f"manifest must be .jsonl, .json or .csv, got {source}")
    base = os.path.dirname(os.path.abspath(source))
    rows = []
    for line, record in enumerate(records, 1):
        if not record.get("audio"):
            raise ValueError(f"{source}, record {line}: missing 'audio'")
        words, ends = record.get("words") or [], record.get("word_end_times") or []
        words = words.split() if isinstance(words, str) else list(words)
        ends = [float(t) for t in (ends.split() if isinstance(ends, str) else ends)]
        if ends and len(ends) != len(words):
            raise ValueError(f"{source}, record {line}: {len(words)} words but {len(ends)} word end times")
        audio = os.path.join(base, record["audio"])
        rows.append(
            {
                "id": str(record.get("id") or os.path.splitext(record["audio"])[0]),
                "audio": audio,
                "text": record.get("text") or "",
                "words": words,
                "word_end_times": ends,
            }
        )
    return rows


def _tokenize_rows(rows: list[dict[str, Any]], speech_tokenizer: SpeechTokenizer, batch_size: int) -> Dataset:
    try:
        units, durations = speech_tokenizer(
            [row["audio"] for row in rows], return_durations=True, batch_size=batch_size
        )
    except ValueError as error:
        raise ValueError(f"{error} (audio files: {rows[0]['audio']} ... {rows[-1]['audio']})") from error
    columns = {
        "id": [row["id"] for row in rows],
        "units": [u.tolist() for u in units],
        "durations": [d.tolist() for d in durations],
        "text": [row.get("text", "") for row in rows],
        "words": [row.get("words", []) for row in rows],
        "word_end_times": [row.get("word_end_times", []) for row in rows],
        "frame_rate": [speech_tokenizer.frame_rate] * len(rows),
    }
    return Dataset.from_dict(columns, features=UNIT_DATASET_FEATURES)


_worker_tokenizer: SpeechTokenizer | None = None


def _init_worker(tokenizer_path: str, num_threads: int) -> None:
    global _worker_tokenizer
    torch.set_num_threads(num_threads)
    _worker_tokenizer = SpeechTokenizer.from_pretrained(tokenizer_path)


def _run_shard(
    rows: list[dict[str, Any]], batch_size: int, shard_path: str, speech_tokenizer: SpeechTokenizer | None = None
) -> int:
    dataset = _tokenize_rows(rows, speech_tokenizer or _worker_tokenizer, batch_size)
    # Written under a temporary name and renamed, so a shard directory is always complete.
    dataset.save_to_disk(shard_path + ".tmp")
    os.replace(shard_path + ".tmp", shard_path)
    return len(rows)


def tokenize_audio_dataset(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    speech_tokenizer: SpeechTokenizer | str | os.PathLike,
    shard_size: int = 256,
    num_proc: int = 1,
    batch_size: int = 8,
    keep_shards: bool = False,
) -> Dataset:
    """Tokenizes a folder or manifest of audio (see `read_audio_source`) into a saved dataset.

    Work goes in shards of `shard_size` utterances saved under `<out_dir>.shards/`; an
    interrupted run called again with the same arguments skips the shards already written.
    Finally the shards are concatenated and saved to `out_dir` with `save_to_disk`.

    Args:
        source: folder of audio files or manifest path.
        out_dir: where the dataset (columns `UNIT_DATASET_COLUMNS`) is saved.
        speech_tokenizer: a `SpeechTokenizer` or a path/Hub id for `SpeechTokenizer.from_pretrained`.
        num_proc: worker processes; each gets an equal share of the CPU threads. On a GPU,
            one process is usually best.
        batch_size: utterances per front-end batch.
        keep_shards: keep `<out_dir>.shards/` after success.

    Returns:
        The saved dataset.
    """
    out_dir = os.fspath(out_dir)
    shards_dir = out_dir.rstrip(os.sep) + ".shards"
    rows = read_audio_source(source)
    if not isinstance(speech_tokenizer, SpeechTokenizer):
        speech_tokenizer = SpeechTokenizer.from_pretrained(speech_tokenizer)

    state = {
        "source": os.path.abspath(os.fspath(source)),
        "num_rows": len(rows),
        "shard_size": shard_size,
        "speech_tokenizer": speech_tokenizer.to_config(),
    }
    os.makedirs(shards_dir, exist_ok=True)
    state_path = os.path.join(shards_dir, _STATE_NAME)
    if os.path.exists(state_path):
        with open(state_path) as f:
            if json.load(f) != json.loads(json.dumps(state)):
                raise ValueError(f"{shards_dir} holds shards of a different job; delete it to start over")
    else:
        with open(state_path, "w") as f:
            json.dump(state, f)

    shard_paths = [
        os.path.join(shards_dir, f"shard-{i:05d}") for i in range((len(rows) + shard_size - 1) // shard_size)
    ]
    todo = [
        (rows[i * shard_size : (i + 1) * shard_size], path)
        for i, path in enumerate(shard_paths)
        if not os.path.isdir(path)
    ]
    with tqdm(
        total=len(rows), initial=len(rows) - sum(len(r) for r, _ in todo), desc="tokenizing audio", unit="utt"
    ) as progress:
        if num_proc <= 1 or len(todo) <= 1:
            for shard_rows, path in todo:
                progress.update(_run_shard(shard_rows, batch_size, path, speech_tokenizer))
        else:
            tokenizer_path = os.path.join(shards_dir, "speech_tokenizer")
            speech_tokenizer.save_pretrained(tokenizer_path)
            threads = max(1, torch.get_num_threads() // num_proc)
            # spawn, not fork: forking after torch has started its thread pools can deadlock.
            with ProcessPoolExecutor(
                num_proc,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(tokenizer_path, threads),
            ) as executor:
                for done in [executor.submit(_run_shard, shard_rows, batch_size, path) for shard_rows, path in todo]:
                    progress.update(done.result())

    dataset = concatenate_datasets([load_from_disk(path) for path in shard_paths])
    dataset.save_to_disk(out_dir)
    if not keep_shards:
        shutil.rmtree(shards_dir)
    return load_from_disk(out_dir)
