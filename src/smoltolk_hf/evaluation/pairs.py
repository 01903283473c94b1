"""Likelihood-pair benchmarks: loaders for the released formats and pair building for the four settings.

A benchmark is a list of `ClozeItem`s. Each item holds a context (possibly empty) and a correct and an incorrect
continuation, each in whichever modalities the benchmark provides: `"text"` (a string) and `"speech"` (an audio
path, or unit ids in `[0, N)`). `build_pairs(items, setting)` turns items into `Pair`s of processor segments for one
setting of paper section 4.2:

| setting | context | continuation |
|---|---|---|
| `S`    | speech | speech |
| `T`    | text   | text   |
| `T->S` | text   | speech |
| `S->T` | speech | text   |

In the cross-modal settings the processor puts a modality marker between context and continuation. Items without a
context (sBLIMP, whole-story spoken StoryCloze files) are whole utterances: only `S` and `T` apply.

Layouts read by `load_benchmark` (detected from the path):

- **ZeroSpeech sLM21 sBLIMP**: a folder (or its `gold.csv`) with `gold.csv` (`filename,id,voice,type,subtype,correct,
  transcription`) and `<filename>.wav` beside it. Rows pair up by `(id, voice)`; `type` is the group for macro
  averaging; the transcriptions give text BLiMP (`T`).
- **Spoken StoryCloze release** (slprl/SpokenStoryCloze, `sSC/` and `tSC/`): whole-story wavs
  `<k>_<storyid>_correct.wav` and `<k+1>_<storyid>_incorrect.wav`, optionally in sub-folders, optionally with
  same-stem `.txt` transcripts. Each file is context plus ending, so this layout gives whole-utterance pairs
  (`S`, and `T` when transcripts are present); this is how the paper's authors scored the released files.
- **Cross-modal StoryCloze** (the split layout of slamkit's cross-modal metric): `<base>_mutual.{wav,txt}` (context),
  `<base>_correct.{wav,txt}` and `<base>_incorrect.{wav,txt}`, optionally in sub-folders: all four settings.
- **Text StoryCloze CSV** (ROCStories release: `InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2,
  AnswerRightEnding`, or the lower-case Hub column names): context = the four sentences, `T` only.
- **Pair manifest** (`.jsonl`, this package's own format, also for pre-tokenized units): one object per line with
  `id`, optional `group`, and for each role in `context`, `correct`, `incorrect` any of `<role>_text`,
  `<role>_audio` (path relative to the manifest) and `<role>_units` (list of unit ids).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

SETTINGS: dict[str, tuple[str, str]] = {
    "S": ("speech", "speech"),
    "T": ("text", "text"),
    "T->S": ("text", "speech"),
    "S->T": ("speech", "text"),
}
ROLES = ("context", "correct", "incorrect")

_RELEASE_RE = re.compile(r"^(\d+)_(.+)_(correct|incorrect)$")
_SPLIT_RE = re.compile(r"^(.+)_(mutual|correct|incorrect)$")
_SPLIT_ROLE = {"mutual": "context", "correct": "correct", "incorrect": "incorrect"}
_STORYCLOZE_COLUMNS = {
    # ROCStories release and the lower-case names of its Hub copies.
    "InputStoryid": "id",
    "story_id": "id",
    "InputSentence1": "s1",
    "InputSentence2": "s2",
    "InputSentence3": "s3",
    "InputSentence4": "s4",
    "input_sentence_1": "s1",
    "input_sentence_2": "s2",
    "input_sentence_3": "s3",
    "input_sentence_4": "s4",
    "RandomFifthSentenceQuiz1": "q1",
    "RandomFifthSentenceQuiz2": "q2",
    "sentence_quiz1": "q1",
    "sentence_quiz2": "q2",
    "AnswerRightEnding": "answer",
    "answer_right_ending": "answer",
}


@dataclass
class ClozeItem:
    """One benchmark item. Each role maps a modality (`"text"`, `"speech"`) to its content.

    Speech content is an audio path or unit ids; `sources` maps `(role, modality)` to the file it came from, so
    that errors can name it. An empty `context` marks a whole-utterance item.
    """

    id: str
    correct: dict[str, Any]
    incorrect: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    sources: dict[tuple[str, str], str] = field(default_factory=dict)

    def modalities(self) -> set[str]:
        """Modalities in which the item can be scored as a whole utterance."""
        return set(self.correct) & set(self.incorrect)


@dataclass
class Pair:
    """A scoring pair for one setting: `context` and the two continuations as processor segments."""

    id: str
    context: list[tuple[str, Any]]
    correct: list[tuple[str, Any]]
    incorrect: list[tuple[str, Any]]
    group: str | None = None


def supports(item: ClozeItem, setting: str) -> bool:
    """Whether `item` has what `setting` needs."""
    context_modality, continuation_modality = SETTINGS[setting]
    if not item.context:
        return context_modality == continuation_modality and continuation_modality in item.modalities()
    return continuation_modality in item.modalities() and context_modality in item.context


def _describe(item: ClozeItem, role: str, modality: str) -> str:
    return item.sources.get((role, modality)) or f"item {item.id!r} ({role}, {modality})"


def build_pairs(items: list[ClozeItem], setting: str) -> list[Pair]:
    """Pairs of `items` in one setting (`"S"`, `"T"`, `"T->S"`, `"S->T"`).

    Raises:
        ValueError: an item lacks a modality the setting needs (naming the item or file), or a cross-modal setting
            is asked of a whole-utterance item.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {list(SETTINGS)}")
    context_modality, continuation_modality = SETTINGS[setting]
    pairs = []
    for item in items:
        if not item.context and context_modality != continuation_modality:
            raise ValueError(
                f"item {item.id!r} is a whole utterance (no separate context): setting {setting} needs the context "
                "and the continuation apart (use the cross-modal StoryCloze layout or a pair manifest)"
            )
        needed = [
            ("correct", continuation_modality),
            ("incorrect", continuation_modality),
        ]
        if item.context:
            needed.append(("context", context_modality))
        for role, modality in needed:
            content = getattr(item, role).get(modality)
            if content is None:
                raise ValueError(f"setting {setting} needs {modality} for {_describe(item, role, modality)}: missing")
            if isinstance(content, str) and modality == "speech" and not os.path.isfile(content):
                raise FileNotFoundError(f"speech file missing: {content} (item {item.id!r}, {role})")
        context = [(context_modality, item.context[context_modality])] if item.context else []
        correct, incorrect = (
            item.correct[continuation_modality],
            item.incorrect[continuation_modality],
        )
        if context and context_modality == continuation_modality == "text":
            # Context and continuation are tokenized separately: a leading space keeps the word boundary.
            correct, incorrect = (
                _with_leading_space(correct),
                _with_leading_space(incorrect),
            )
        pairs.append(
            Pair(
                id=item.id,
                context=context,
                correct=[(continuation_modality, correct)],
                incorrect=[(continuation_modality, incorrect)],
                group=item.group,
            )
        )
    return pairs


def _with_leading_space(text: str) -> str:
    return text if text[:1].isspace() else " " + text


def tokenize_speech(items: list[ClozeItem], speech_tokenizer: Any, batch_size: int = 8) -> list[ClozeItem]:
    """Returns copies of `items` with every audio path replaced by its units, each file tokenized once."""
    paths = sorted({c for item in items for role in ROLES if isinstance(c := getattr(item, role).get("speech"), str)})
    if not paths:
        return items
    if speech_tokenizer is None:
        raise ValueError(f"{len(paths)} speech inputs are audio files (e.g. {paths[0]}) but no speech tokenizer")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"speech file missing: {missing[0]}" + (f" (+{len(missing) - 1} more)" * (len(missing) > 1))
        )
    units = dict(zip(paths, speech_tokenizer(paths, batch_size=batch_size)))
    out = []
    for item in items:
        roles = {}
        for role in ROLES:
            content = dict(getattr(item, role))
            if isinstance(content.get("speech"), str):
                content["speech"] = units[content["speech"]]
            roles[role] = content
        out.append(replace(item, **roles))
    return out


# --- loaders --------------------------------------------------------------------------------------------------


def _read_transcript(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    if not text:
        raise ValueError(f"empty transcript: {path}")
    return text


def _files_by_stem(folder: str, pattern: re.Pattern) -> tuple[dict[str, dict[str, str]], list[str]]:
    """`{stem-path: {extension: path}}` for `.wav`/`.txt` files under `folder` whose stem matches, and the others."""
    matched: dict[str, dict[str, str]] = defaultdict(dict)
    others = []
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            stem, extension = os.path.splitext(name)
            if extension.lower() not in (".wav", ".txt"):
                continue
            if pattern.match(stem):
                matched[os.path.join(root, stem)][extension.lower()] = os.path.join(root, name)
            else:
                others.append(os.path.join(root, name))
    return matched, others


def load_spoken_storycloze(folder: str | os.PathLike) -> list[ClozeItem]:
    """Whole-story pairs of the Spoken StoryCloze release (`<k>_<id>_correct.wav` + `<k+1>_<id>_incorrect.wav`)."""
    folder = os.fspath(folder)
    files, others = _files_by_stem(folder, _RELEASE_RE)
    if others:
        raise ValueError(f"{others[0]}: not a Spoken StoryCloze file name (expected <k>_<storyid>_correct|incorrect)")
    stories: dict[str, dict[str, tuple[int, str, dict[str, str]]]] = defaultdict(dict)
    for stem, by_extension in files.items():
        k, story, label = _RELEASE_RE.match(os.path.basename(stem)).groups()
        if label in stories[story]:
            raise ValueError(f"{stem}: story {story!r} has two {label} files")
        stories[story][label] = (int(k), stem, by_extension)
    items = []
    for story, labels in sorted(stories.items(), key=lambda kv: min(k for k, _, _ in kv[1].values())):
        for label, other in (("correct", "incorrect"), ("incorrect", "correct")):
            if label in labels and other not in labels:
                stem = labels[label][1]
                raise ValueError(f"{stem}.wav has no {other} counterpart (expected *_{story}_{other}.wav)")
        roles: dict[str, dict[str, Any]] = {}
        sources = {}
        for label in ("correct", "incorrect"):
            _, stem, by_extension = labels[label]
            if ".wav" not in by_extension:
                raise ValueError(f"{stem}.wav is missing (its transcript {by_extension['.txt']} exists)")
            roles[label] = {"speech": by_extension[".wav"]}
            sources[(label, "speech")] = by_extension[".wav"]
            if ".txt" in by_extension:
                roles[label]["text"] = _read_transcript(by_extension[".txt"])
                sources[(label, "text")] = by_extension[".txt"]
        if ("text" in roles["correct"]) != ("text" in roles["incorrect"]):
            missing = "incorrect" if "text" in roles["correct"] else "correct"
            raise ValueError(f"{labels[missing][1]}.txt is missing (the other ending of story {story!r} has one)")
        items.append(ClozeItem(id=story, sources=sources, **roles))
    if not items:
        raise ValueError(f"no Spoken StoryCloze files in {folder}")
    return items


def load_crossmodal_storycloze(folder: str | os.PathLike) -> list[ClozeItem]:
    """Context/ending-split StoryCloze (`<base>_mutual|correct|incorrect.{wav,txt}`): all four settings."""
    folder = os.fspath(folder)
    files, _ = _files_by_stem(folder, _SPLIT_RE)
    bases: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for stem, by_extension in files.items():
        base, role = _SPLIT_RE.match(stem).groups()
        bases[base][_SPLIT_ROLE[role]] = by_extension
    items = []
    for base, roles in sorted(bases.items()):
        extensions = {e for by_extension in roles.values() for e in by_extension}
        content: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
        sources = {}
        for extension in sorted(extensions):
            for role, suffix in (
                ("context", "mutual"),
                ("correct", "correct"),
                ("incorrect", "incorrect"),
            ):
                path = roles.get(role, {}).get(extension)
                if path is None:
                    raise ValueError(f"{base}_{suffix}{extension} is missing (other files of {base} exist)")
                modality = "speech" if extension == ".wav" else "text"
                content[role][modality] = path if modality == "speech" else _read_transcript(path)
                sources[(role, modality)] = path
        items.append(ClozeItem(id=os.path.relpath(base, folder), sources=sources, **content))
    if not items:
        raise ValueError(f"no <base>_mutual/_correct/_incorrect files in {folder}")
    return items


def load_storycloze_csv(path: str | os.PathLike) -> list[ClozeItem]:
    """Text StoryCloze (ROCStories CSV): context = sentences 1-4, continuations = the right and the wrong ending."""
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = {_STORYCLOZE_COLUMNS[c]: c for c in reader.fieldnames or [] if c in _STORYCLOZE_COLUMNS}
        missing = {"id", "s1", "s2", "s3", "s4", "q1", "q2", "answer"} - set(names)
        if missing:
            raise ValueError(f"{path}: not a StoryCloze CSV (no columns for {sorted(missing)})")
        items = []
        for line, row in enumerate(reader, 2):
            fields = {key: (row[column] or "").strip() for key, column in names.items()}
            empty = [names[k] for k, v in fields.items() if not v]
            if empty:
                raise ValueError(f"{path}, line {line}: empty {empty}")
            if fields["answer"] not in ("1", "2"):
                raise ValueError(f"{path}, line {line}: answer must be 1 or 2, got {fields['answer']!r}")
            right, wrong = ("q1", "q2") if fields["answer"] == "1" else ("q2", "q1")
            items.append(
                ClozeItem(
                    id=fields["id"],
                    context={"text": " ".join(fields[s] for s in ("s1", "s2", "s3", "s4"))},
                    correct={"text": fields[right]},
                    incorrect={"text": fields[wrong]},
                    sources={(role, "text"): f"{path}, line {line}" for role in ROLES},
                )
            )
    return items


def load_sblimp(path: str | os.PathLike) -> list[ClozeItem]:
    """ZeroSpeech sLM21 sBLIMP: `gold.csv` plus `<filename>.wav` in the same folder (speech and text pairs)."""
    path = os.fspath(path)
    gold = os.path.join(path, "gold.csv") if os.path.isdir(path) else path
    folder = os.path.dirname(gold)
    with open(gold, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"filename", "id", "voice", "type", "correct", "transcription"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{gold}: not an sBLIMP gold file (missing columns {sorted(missing)})")
        groups: dict[tuple[str, str], dict[str, dict[str, str]]] = defaultdict(dict)
        for line, row in enumerate(reader, 2):
            label = {"1": "correct", "0": "incorrect"}.get(row["correct"].strip())
            if label is None:
                raise ValueError(f"{gold}, line {line}: 'correct' must be 1 or 0, got {row['correct']!r}")
            if not row["transcription"].strip():
                raise ValueError(f"{gold}, line {line}: empty transcription for {row['filename']}")
            key = (row["id"], row["voice"])
            if label in groups[key]:
                raise ValueError(f"{gold}, line {line}: pair id={key[0]} voice={key[1]} has two {label} rows")
            groups[key][label] = {**row, "line": str(line)}
    items = []
    for (pair_id, voice), rows in groups.items():
        for label, other in (("correct", "incorrect"), ("incorrect", "correct")):
            if other not in rows:
                raise ValueError(
                    f"{gold}, line {rows[label]['line']}: {rows[label]['filename']} has no {other} counterpart "
                    f"(id={pair_id}, voice={voice})"
                )
        roles = {
            label: {
                "speech": os.path.join(folder, rows[label]["filename"] + ".wav"),
                "text": rows[label]["transcription"].strip(),
            }
            for label in ("correct", "incorrect")
        }
        sources = {(label, m): f"{gold}, line {rows[label]['line']}" for label in roles for m in ("text",)}
        sources.update({(label, "speech"): roles[label]["speech"] for label in roles})
        items.append(
            ClozeItem(
                id=f"{pair_id}/{voice}",
                group=rows["correct"]["type"],
                sources=sources,
                **roles,
            )
        )
    if not items:
        raise ValueError(f"{gold}: no rows")
    return items


def load_pair_manifest(path: str | os.PathLike) -> list[ClozeItem]:
    """This package's JSONL pair manifest (see the module docstring); speech as audio paths or unit ids."""
    path = os.fspath(path)
    base = os.path.dirname(os.path.abspath(path))
    items = []
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            record = json.loads(raw)
            where = f"{path}, line {line}"
            roles: dict[str, dict[str, Any]] = {role: {} for role in ROLES}
            for role in ROLES:
                text, audio, units = (record.get(f"{role}_{k}") for k in ("text", "audio", "units"))
                if audio is not None and units is not None:
                    raise ValueError(f"{where}: give {role}_audio or {role}_units, not both")
                if text is not None:
                    if not str(text).strip():
                        raise ValueError(f"{where}: empty {role}_text")
                    roles[role]["text"] = str(text).strip()
                if audio is not None:
                    roles[role]["speech"] = os.path.join(base, audio)
                if units is not None:
                    if len(units) == 0:
                        raise ValueError(f"{where}: empty {role}_units")
                    roles[role]["speech"] = np.asarray(units, dtype=np.int64)
            for label in ("correct", "incorrect"):
                if not roles[label]:
                    raise ValueError(f"{where}: no {label}_text, {label}_audio or {label}_units")
            items.append(
                ClozeItem(
                    id=str(record.get("id", line)),
                    group=record.get("group"),
                    sources={(role, m): where for role in ROLES for m in ("text", "speech")},
                    **roles,
                )
            )
    if not items:
        raise ValueError(f"{path}: no pairs")
    return items


def load_benchmark(path: str | os.PathLike) -> list[ClozeItem]:
    """Loads a benchmark in any layout of the module docstring, detected from `path`.

    Raises:
        ValueError: the path is in no known layout (the message names it and lists the layouts).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        name = os.path.basename(path)
        if name == "gold.csv":
            return load_sblimp(path)
        if name.endswith(".jsonl"):
            return load_pair_manifest(path)
        if name.endswith(".csv"):
            return load_storycloze_csv(path)
    elif os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "gold.csv")):
            return load_sblimp(path)
        stems = [
            os.path.splitext(name)[0]
            for _, _, names in os.walk(path)
            for name in names
            if name.lower().endswith((".wav", ".txt"))
        ]
        if any(stem.endswith("_mutual") for stem in stems):
            return load_crossmodal_storycloze(path)
        if stems and any(_RELEASE_RE.match(stem) for stem in stems):
            return load_spoken_storycloze(path)
    else:
        raise FileNotFoundError(f"no benchmark at {path}")
    raise ValueError(
        f"{path}: unknown benchmark layout. Expected an sBLIMP folder with gold.csv, a Spoken StoryCloze folder "
        "(<k>_<id>_correct.wav / <k+1>_<id>_incorrect.wav), a cross-modal StoryCloze folder (<base>_mutual/_correct/"
        "_incorrect .wav/.txt), a StoryCloze CSV, or a .jsonl pair manifest."
    )
