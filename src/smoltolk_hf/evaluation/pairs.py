"""Likelihood-pair benchmarks: loaders for the released formats and pair building for the four settings.

A benchmark is a list of `ClozeItem`s. Each item holds a context (possibly empty) and a correct and an incorrect
continuation, each in whichever modalities the benchmark provides: `"text"` (a string, or pre-tokenised text ids)
and `"speech"` (an audio path, or unit ids in `[0, N)`). `build_pairs(items, setting)` turns items into `Pair`s of processor segments for one
setting of paper section 4.2:

| setting | context | continuation |
|---|---|---|
| `S`    | speech | speech |
| `T`    | text   | text   |
| `T->S` | text   | speech |
| `S->T` | speech | text   |

In the cross-modal settings a modality marker goes between context and continuation (the authors' switch token). Items without a
context (sBLIMP, whole-story spoken StoryCloze files) are whole utterances: only `S` and `T` apply.

Layouts read by `load_benchmark` (detected from the path; the README's benchmark table says where each comes from):

- **The authors' cross-modal StoryCloze** (`load_authors_crossmodal`): `cross-modal_manifest.csv` and two feature
  folders of `<split>.bin` / `<split>.len` memmaps (pre-tokenised SmolLM text, speech units): all four settings,
  context and continuation apart.
- **ZeroSpeech sLM21 sBLIMP** (`load_sblimp`): the `syntactic` folder (its `test` split by default) or a split
  folder with `gold.csv` (`filename,type,subtype,correct,id,voice,transcription`) and `<filename>.wav` beside it.
  Rows pair up by `(type, subtype, id, voice)`; voices of one pair are averaged, `type` is the macro group; the
  transcriptions give text BLiMP (`T`).
- **TWIST's Spoken StoryCloze release** (`sSC/` and `tSC/`): whole-story wavs `<k>_<storyid>_correct.wav` and
  `<k+1>_<storyid>_incorrect.wav`, optionally in sub-folders, optionally with same-stem `.txt` transcripts. Each
  file is context plus ending, so this layout gives whole-utterance pairs (`S`, and `T` with transcripts), scored
  on the whole story as the authors' `full_eval.sh` scores these files.
- **Split folder** (this package's layout, no public release uses it): `<base>_mutual.{wav,txt}` (context),
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

    Text content is a string or pre-tokenised text ids (the authors' format); speech content is an audio path or
    unit ids. `sources` maps `(role, modality)` to the file it came from, so that errors can name it. An empty
    `context` marks a whole-utterance item.

    Attributes:
        group: the group of macro averaging (sBLIMP: the type).
        base_id: the id this item shares with its other renditions (sBLIMP: the pair over voices); their outcomes
            are averaged into one before any other averaging. None: the item stands alone.
        rows: where `correct` / `incorrect` sit among the benchmark's continuations (the authors' manifest row);
            orders the pool the S->T text prefixes are drawn from. Default: item order.
        text_eos: the end token the text continuations carry in the data (authors' format); default: the
            tokenizer's EOS.
    """

    id: str
    correct: dict[str, Any]
    incorrect: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    sources: dict[tuple[str, str], str] = field(default_factory=dict)
    base_id: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    text_eos: int | None = None

    def modalities(self) -> set[str]:
        """Modalities in which the item can be scored as a whole utterance."""
        return set(self.correct) & set(self.incorrect)


@dataclass
class Pair:
    """A scoring pair for one setting: `context` and the two continuations as processor segments.

    `prefixes` (authors' S->T only): for the correct and the incorrect candidate, the text continuation of another
    item and its end token, whose last tokens go before the speech context (see `draw_prefix_sources`).
    """

    id: str
    context: list[tuple[str, Any]]
    correct: list[tuple[str, Any]]
    incorrect: list[tuple[str, Any]]
    group: str | None = None
    base_id: str | None = None
    prefixes: tuple[tuple[Any, int | None], tuple[Any, int | None]] | None = None


def supports(item: ClozeItem, setting: str) -> bool:
    """Whether `item` has what `setting` needs."""
    context_modality, continuation_modality = SETTINGS[setting]
    if not item.context:
        return context_modality == continuation_modality and continuation_modality in item.modalities()
    return continuation_modality in item.modalities() and context_modality in item.context


def _describe(item: ClozeItem, role: str, modality: str) -> str:
    return item.sources.get((role, modality)) or f"item {item.id!r} ({role}, {modality})"


def build_pairs(items: list[ClozeItem], setting: str, protocol: str = "authors", seed: int = 42) -> list[Pair]:
    """Pairs of `items` in one setting (`"S"`, `"T"`, `"T->S"`, `"S->T"`).

    A text continuation after a context gets a leading space (context and continuation are tokenised apart): in
    `T` under both protocols, and in `S->T` under `protocol="authors"`, whose S->T text continuation is the token
    array of T. Under `"authors"`, S->T pairs also carry the text prefixes drawn with `seed`.

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
        if context and continuation_modality == "text" and (context_modality == "text" or protocol == "authors"):
            # Context and continuation are tokenized separately: a leading space keeps the word boundary.
            correct, incorrect = _with_leading_space(correct), _with_leading_space(incorrect)
        pairs.append(
            Pair(
                id=item.id,
                context=context,
                correct=[(continuation_modality, correct)],
                incorrect=[(continuation_modality, incorrect)],
                group=item.group,
                base_id=item.base_id,
            )
        )
    if protocol == "authors" and setting == "S->T":
        for pair, prefixes in zip(pairs, draw_prefix_sources(items, seed)):
            pair.prefixes = prefixes
    return pairs


def _with_leading_space(text: Any) -> Any:
    """A leading space before a text string (pre-tokenised ids stay as they are)."""
    if not isinstance(text, str):
        return text
    return text if text[:1].isspace() else " " + text


def draw_prefix_sources(
    items: list[ClozeItem], seed: int = 42
) -> list[tuple[tuple[Any, int | None], tuple[Any, int | None]]]:
    """For each item's correct and incorrect candidate, another continuation's text (and its end token) whose
    last tokens precede the speech context in the authors' S->T setting.

    As the authors' `cross-modal_eval.py`: one `numpy.random.default_rng(seed)` draws, for each item in order, the
    correct candidate's source and then the incorrect one's, uniformly among all continuations (in `rows` order)
    except the candidate's own. Their script draws on each of its passes over the data (one per setting, S->T third
    in their order S, T, S->T, T->S), so the draws kept here are those of the third pass: on the authors' data they
    are the prefixes their script used.
    """
    pool: dict[int, tuple[Any, int | None]] = {}
    own: list[tuple[int, int]] = []
    for index, item in enumerate(items):
        rows = tuple(item.rows.get(role, 2 * index + k) for k, role in enumerate(("correct", "incorrect")))
        for row, role in zip(rows, ("correct", "incorrect")):
            text = getattr(item, role).get("text")
            if text is None:
                raise ValueError(f"S->T needs text for {_describe(item, role, 'text')}: missing")
            if row in pool:
                raise ValueError(f"item {item.id!r}: continuation row {row} is used twice")
            pool[row] = (_with_leading_space(text), item.text_eos)
        own.append(rows)
    if len(pool) < 2:
        raise ValueError("the S->T prefixes are drawn from other continuations: need at least 2 continuations")
    candidates = sorted(pool)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        draws = []
        for rows in own:
            for row in rows:
                while (drawn := rng.choice(candidates)) == row:
                    pass
                draws.append(int(drawn))
    return [(pool[draws[2 * i]], pool[draws[2 * i + 1]]) for i in range(len(own))]


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


def _sblimp_gold(path: str, split: str) -> str:
    """The `gold.csv` of `path`: the file itself, `<path>/gold.csv`, or the split's (`<path>[/syntactic]/<split>`)."""
    if os.path.isfile(path):
        return path
    for folder in (path, os.path.join(path, split), os.path.join(path, "syntactic", split)):
        if os.path.isfile(os.path.join(folder, "gold.csv")):
            return os.path.join(folder, "gold.csv")
    raise FileNotFoundError(
        f"no sBLIMP gold.csv in {path}, {os.path.join(path, split)} or {os.path.join(path, 'syntactic', split)}: "
        "pass the sLM21 `syntactic` folder, one of its split folders, or a gold.csv"
    )


def load_sblimp(path: str | os.PathLike, split: str = "test") -> list[ClozeItem]:
    """ZeroSpeech sLM21 sBLIMP: `gold.csv` plus `<filename>.wav` in the same folder (speech and text pairs).

    `path` is the sLM21 dataset, its `syntactic` folder (the `split` folder is read: the paper reports `test`), a
    split folder or a `gold.csv`. Rows pair up by `(type, subtype, id, voice)` as the ZeroSpeech toolkit pairs
    them; the voices of one `(type, subtype, id)` share a `base_id` (the toolkit averages them first) and `type`
    is the group of the macro average.
    """
    gold = _sblimp_gold(os.fspath(path), split)
    folder = os.path.dirname(gold)
    with open(gold, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"filename", "id", "voice", "type", "correct", "transcription"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{gold}: not an sBLIMP gold file (missing columns {sorted(missing)})")
        groups: dict[tuple[str, str, str, str], dict[str, dict[str, str]]] = defaultdict(dict)
        for line, row in enumerate(reader, 2):
            label = {"1": "correct", "0": "incorrect"}.get(row["correct"].strip())
            if label is None:
                raise ValueError(f"{gold}, line {line}: 'correct' must be 1 or 0, got {row['correct']!r}")
            if not row["transcription"].strip():
                raise ValueError(f"{gold}, line {line}: empty transcription for {row['filename']}")
            key = (row["type"], row.get("subtype") or "", row["id"], row["voice"])
            if label in groups[key]:
                raise ValueError(
                    f"{gold}, line {line}: pair type={key[0]} subtype={key[1]} id={key[2]} voice={key[3]} has two "
                    f"{label} rows"
                )
            groups[key][label] = {**row, "line": str(line)}
    items = []
    for (kind, subtype, pair_id, voice), rows in groups.items():
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
        sources = {(label, "text"): f"{gold}, line {rows[label]['line']}" for label in roles}
        sources.update({(label, "speech"): roles[label]["speech"] for label in roles})
        base_id = f"{kind}/{subtype}/{pair_id}"
        items.append(ClozeItem(id=f"{base_id}/{voice}", group=kind, base_id=base_id, sources=sources, **roles))
    if not items:
        raise ValueError(f"{gold}: no rows")
    return items


AUTHORS_MANIFEST = "cross-modal_manifest.csv"


def _authors_rows(folder: str, split: str, num_rows: int) -> dict[str, list[np.ndarray]]:
    """The text and speech rows of the authors' format: `<feats>/<split>.bin` (uint16 ids) split by `.len`.

    Their code reads text lengths as uint64 and speech lengths as uint16, which tells the two feature folders
    apart (`.len` holds one length per manifest row).
    """
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        lengths = os.path.join(folder, name, f"{split}.len")
        if not os.path.isfile(lengths):
            continue
        itemsize = os.path.getsize(lengths) / max(num_rows, 1)
        modality = {8: "text", 2: "speech"}.get(itemsize)
        if modality is None:
            raise ValueError(
                f"{lengths}: {os.path.getsize(lengths)} bytes for {num_rows} manifest rows; expected uint64 (text) "
                "or uint16 (speech) lengths, one per row of " + AUTHORS_MANIFEST
            )
        if modality in found:
            raise ValueError(f"two {modality} feature folders in {folder}: {found[modality]} and {name}; keep one")
        found[modality] = name
    missing = {"text", "speech"} - set(found)
    if missing:
        raise ValueError(
            f"{folder}: no {' or '.join(sorted(missing))} features for split {split!r} (expected <feats>/{split}.bin "
            f"and .len beside {AUTHORS_MANIFEST}, e.g. smollm/ and mhubert25hzl11/)"
        )
    rows = {}
    for modality, name in found.items():
        base = os.path.join(folder, name, split)
        lengths = np.fromfile(base + ".len", dtype=np.uint64 if modality == "text" else np.uint16).astype(np.int64)
        if not os.path.isfile(base + ".bin"):
            raise FileNotFoundError(f"{base}.bin is missing (its {base}.len exists)")
        data = np.memmap(base + ".bin", dtype=np.uint16, mode="r")
        if int(lengths.sum()) != len(data):
            raise ValueError(f"{base}.len sums to {int(lengths.sum())} ids but {base}.bin holds {len(data)}")
        if (lengths < 2).any():
            raise ValueError(
                f"{base}.len: row {int(np.argmax(lengths < 2))} is shorter than one id plus its end token"
            )
        rows[modality] = np.split(np.asarray(data, dtype=np.int64), np.cumsum(lengths)[:-1])
        ends = {int(r[-1]) for r in rows[modality]}
        if len(ends) != 1:
            raise ValueError(f"{base}.bin: rows end with different ids {sorted(ends)[:5]}; each row ends with its EOS")
    return rows


def load_authors_crossmodal(folder: str | os.PathLike, split: str = "test") -> list[ClozeItem]:
    """The paper authors' cross-modal StoryCloze data (`data/<dataset>/` of their `cross-modal_eval.py`).

    The folder holds `cross-modal_manifest.csv` (`pair_id`, `type` prompt/continuation, `correctness`
    -/correct/incorrect; row `i` is row `i` of both feature files) and two feature folders with `<split>.bin` /
    `<split>.len`: pre-tokenised text (SmolLM ids) and speech units, each row ending with its end token, which is
    dropped as their code drops it. As theirs, each prompt takes the first correct and the first incorrect
    continuation of its `pair_id`. All four settings.
    """
    folder = os.fspath(folder)
    manifest = os.path.join(folder, AUTHORS_MANIFEST)
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"pair_id", "type", "correctness"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{manifest}: missing columns {sorted(missing)}")
        table = list(reader)
    rows = _authors_rows(folder, split, len(table))
    for modality, arrays in rows.items():
        if len(arrays) != len(table):
            raise ValueError(f"{len(arrays)} {modality} rows for {len(table)} manifest rows in {manifest}")
    prompts: dict[str, int] = {}
    continuations: dict[str, dict[str, int]] = defaultdict(dict)
    for index, row in enumerate(table):
        if row["type"] == "prompt":
            prompts.setdefault(row["pair_id"], index)
        elif row["type"] == "continuation" and row["correctness"] in ("correct", "incorrect"):
            continuations[row["pair_id"]].setdefault(row["correctness"], index)
        else:
            raise ValueError(
                f"{manifest}, line {index + 2}: type must be prompt or continuation (with correctness correct or "
                f"incorrect), got {row['type']!r} / {row['correctness']!r}"
            )
    text_eos = int(rows["text"][0][-1])
    items = []
    for pair_id, prompt in prompts.items():
        found = continuations.get(pair_id, {})
        if set(found) != {"correct", "incorrect"}:
            continue  # as the authors' script: a prompt without both continuations is no sample
        indices = {"context": prompt, **found}
        content = {role: {m: rows[m][i][:-1] for m in ("text", "speech")} for role, i in indices.items()}
        items.append(
            ClozeItem(
                id=pair_id,
                rows={role: indices[role] for role in ("correct", "incorrect")},
                text_eos=text_eos,
                sources={(r, m): f"{manifest}, line {i + 2}" for r, i in indices.items() for m in ("text", "speech")},
                **content,
            )
        )
    if not items:
        raise ValueError(f"{manifest}: no prompt with both a correct and an incorrect continuation")
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


def benchmark_layout(path: str | os.PathLike, split: str = "test") -> str:
    """The layout of `path` (a key of `LAYOUTS`), detected from its files.

    Raises:
        FileNotFoundError: nothing at `path`.
        ValueError: the path is in no known layout (the message names it and lists the layouts).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        name = os.path.basename(path)
        if name == "gold.csv":
            return "sblimp"
        if name == AUTHORS_MANIFEST:
            return "authors"
        if name.endswith(".jsonl"):
            return "manifest"
        if name.endswith(".csv"):
            return "storycloze_csv"
    elif os.path.isdir(path):
        if os.path.isfile(os.path.join(path, AUTHORS_MANIFEST)):
            return "authors"
        if any(os.path.isfile(os.path.join(path, *sub, "gold.csv")) for sub in ((), (split,), ("syntactic", split))):
            return "sblimp"
        stems = [
            os.path.splitext(name)[0]
            for _, _, names in os.walk(path)
            for name in names
            if name.lower().endswith((".wav", ".txt"))
        ]
        if any(stem.endswith("_mutual") for stem in stems):
            return "split"
        if stems and any(_RELEASE_RE.match(stem) for stem in stems):
            return "release"
    else:
        raise FileNotFoundError(f"no benchmark at {path}")
    raise ValueError(
        f"{path}: unknown benchmark layout. Expected the authors' cross-modal folder ({AUTHORS_MANIFEST} + <feats>/"
        f"{split}.bin/.len), an sBLIMP folder with gold.csv, a Spoken StoryCloze folder "
        "(<k>_<id>_correct.wav / <k+1>_<id>_incorrect.wav), a cross-modal StoryCloze folder (<base>_mutual/_correct/"
        "_incorrect .wav/.txt), a StoryCloze CSV, or a .jsonl pair manifest."
    )


# Layout key -> (description for results tables, loader(path, split)).
LAYOUTS = {
    "authors": (
        "authors' cross-modal format",
        lambda path, split: load_authors_crossmodal(
            path if os.path.isdir(path) else os.path.dirname(os.fspath(path)), split
        ),
    ),
    "sblimp": ("ZeroSpeech sBLIMP", load_sblimp),
    "release": ("Spoken StoryCloze release (whole stories)", lambda path, split: load_spoken_storycloze(path)),
    "split": ("split folder (_mutual/_correct/_incorrect)", lambda path, split: load_crossmodal_storycloze(path)),
    "storycloze_csv": ("StoryCloze CSV", lambda path, split: load_storycloze_csv(path)),
    "manifest": ("pair manifest", lambda path, split: load_pair_manifest(path)),
}


def load_benchmark(path: str | os.PathLike, split: str = "test") -> list[ClozeItem]:
    """Loads a benchmark in any layout of the module docstring, detected from `path` (`benchmark_layout`); `split`
    picks the split of layouts that hold several (sBLIMP, the authors' format)."""
    return LAYOUTS[benchmark_layout(path, split)][1](os.fspath(path), split)
