"""The typed training configuration: the YAML's sections as dataclasses, command-line overrides, strict keys.

`load_config(path_or_dict, overrides)` reads a training YAML into a `TrainConfig`:

- `model` -> `ModelSection`, `data` -> `DataSection` (each dataset entry a `DatasetEntry`), `stages` ->
  `TwoStageSchedule`; `training` stays a mapping of `TrainingArguments` fields (on top of the paper's recipe).
- Every key is checked: an unknown one anywhere (a section, a model override, a data entry, a Trainer option) is
  a `ValueError` naming it and the closest valid key; values are type-checked against the fields (an integer is
  accepted where a float is expected, nothing else is converted).
- Command-line overrides use one convention, `--SECTION.FIELD VALUE` (or `--SECTION.FIELD=VALUE`), with dots for
  nested keys and list indexes: `--training.learning_rate 1e-4`, `--model.overrides.entropy_beta 0.01`,
  `--data.text.0.weight 0.5`. A value is read as YAML (`1e-4` is a float, `true` a bool, `[10, 30]` a list).

YAML is read with the float syntax of YAML 1.2, so that `1e-4` is a float (PyYAML's YAML 1.1 reads it as a
string).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import yaml
from transformers import TrainingArguments

from ..configuration_smoltolk import SmolTolkConfig, closest_name_hint
from .optim import TwoStageSchedule


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `1e-4` and `1E5` (no dot) as floats, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class ModelSection:
    """The `model:` section: exactly one of `from_text_model` (a Llama-architecture text LM: path, Hub id or
    "embedded"; with `preset`, that preset's speech settings), `from_pretrained` (a SmolTolk folder) or `preset`
    alone (random init, needs `tokenizer`)."""

    from_text_model: str | None = None
    from_pretrained: str | None = None
    preset: str | None = None
    tokenizer: str | None = None  # text tokenizer (default: the source model's)
    speech_tokenizer: str | None = None  # a SpeechTokenizer folder, saved with the processor
    num_speech_units: int | None = None  # default 500; a from_pretrained folder keeps its own
    attn_implementation: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # any SmolTolkConfig field

    def __post_init__(self):
        sources = [name for name in ("from_text_model", "from_pretrained") if getattr(self, name)]
        if len(sources) > 1 or not (sources or self.preset):
            raise ValueError("give exactly one of from_text_model, from_pretrained or preset.")
        ignored = {"preset": self.preset, "num_speech_units": self.num_speech_units}
        for name, value in ignored.items():
            if self.from_pretrained and value is not None:
                raise ValueError(
                    f"{name}={value!r} would be ignored: a from_pretrained folder keeps its own configuration "
                    "(use overrides to change fields)."
                )
        fields = [name for name in SmolTolkConfig.__dataclass_fields__ if not name.startswith("_")]
        for key in self.overrides:
            if key not in fields:
                raise ValueError(f"overrides.{key} is not a SmolTolkConfig field{closest_name_hint(key, fields)}.")


@dataclass
class DatasetEntry:
    """One dataset of a `data:` modality list: a `save_to_disk` folder, or anything `datasets.load_dataset` takes
    (`path`, `name`, `split`, `data_files`); `weight` is its sampling weight within the modality (default: its
    size). A bare string is the `path`."""

    shorthand: ClassVar[str] = "path"

    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None
    weight: float | None = None


@dataclass
class DataSection:
    """The `data:` section: packed-sample length, mixture seed, interleaved run lengths (words, inclusive ranges)
    and the datasets of each modality."""

    context_length: int = 2048
    seed: int = 0
    text_words: list[int] | None = None  # default [10, 30]
    speech_words: list[int] | None = None  # default [5, 15]
    speech: list[DatasetEntry] = field(default_factory=list)
    text: list[DatasetEntry] = field(default_factory=list)
    interleaved: list[DatasetEntry] = field(default_factory=list)


@dataclass
class TrainConfig:
    """A whole training YAML: `model`, `data`, `stages` and `training` (`TrainingArguments` fields)."""

    model: ModelSection
    data: DataSection
    training: dict[str, Any]
    stages: TwoStageSchedule = field(default_factory=TwoStageSchedule)

    def __post_init__(self):
        valid = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
        for key in self.training:
            if key not in valid:
                raise ValueError(f"training.{key} is not a TrainingArguments field{closest_name_hint(key, valid)}.")


def _at(where: str, key: Any) -> str:
    """The dotted key path of `key` inside `where` (the top level is "")."""
    return f"{where}.{key}" if where else str(key)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _typed(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type `hint` (dataclasses built recursively); an int passes as a float and a
    path object as a string, nothing else is converted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _typed(value, option, where)
            except ValueError:
                continue
    elif origin is list and isinstance(value, list):
        return [_typed(item, args[0], _at(where, index)) for index, item in enumerate(value)]
    elif origin is dict and isinstance(value, dict):
        return dict(value)
    elif dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif hint is str and isinstance(value, os.PathLike):  # a path given in Python
        return os.fspath(value)
    elif isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where} must be {_type_name(hint)}, got {value!r} ({type(value).__name__}).")


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """An instance of the dataclass `cls` from the mapping `data` read at `where` (a dotted key path), refusing
    unknown keys (with the closest valid one), missing required fields and values of the wrong type."""
    shorthand = getattr(cls, "shorthand", None)
    if shorthand and isinstance(data, str):
        data = {shorthand: data}
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'the config'} must be a mapping of {cls.__name__} fields, got {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise ValueError(f"{_at(where, key)} is not a valid key{closest_name_hint(str(key), fields)}.")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where or 'the config'} needs {', '.join(missing)}.")
    hints = typing.get_type_hints(cls)
    values = {key: _typed(value, hints[key], _at(where, key)) for key, value in data.items()}
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"{where}: {error}" if where else str(error)) from error


def parse_value(raw: str) -> Any:
    """A command-line value read as the config file's YAML is: `1e-4` a float, `3` an int, `false` a bool, `none`
    the string "none"."""
    return yaml.load(raw, Loader=_Loader)


def parse_assignment(item: str) -> tuple[str, Any]:
    """`"key=value"` -> `("key", parse_value("value"))`; raises `ValueError` without an `=`."""
    key, has_value, raw = item.partition("=")
    if not has_value or not key:
        raise ValueError(f"{item!r} is not KEY=VALUE (e.g. num_output_adapter_layers=0).")
    return key, parse_value(raw)


def parse_overrides(argv: Sequence[str]) -> list[tuple[str, Any]]:
    """`["--training.learning_rate", "1e-4", "--data.seed=3"]` -> `[("training.learning_rate", 1e-4), ...]`."""
    pairs, tokens = [], list(argv)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ValueError(
                f"unexpected argument {token!r}: configuration overrides are --SECTION.FIELD VALUE, "
                "e.g. --training.learning_rate 1e-4."
            )
        key, has_value, raw = token[2:].partition("=")
        if not has_value:
            if not tokens:
                raise ValueError(f"--{key} needs a value.")
            raw = tokens.pop(0)
        pairs.append((key, parse_value(raw)))
    return pairs


def apply_overrides(config: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the raw `config` mapping with each `(dotted key, value)` set; list indexes are numbers."""
    config = copy.deepcopy(config)
    for key, value in overrides:
        parts, node = key.split("."), config
        for depth, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: depth + 1]))
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        else:
            node[last] = value
    return config


def _index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ValueError(f"--{where}: {part!r} is not an index of this list (0 to {len(node) - 1}).")
    return int(part)


def _child(node: Any, part: str, where: str) -> Any:
    """The container at `part` of `node`, created (as a mapping) if it is missing."""
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if not isinstance(node, dict):
        raise ValueError(f"--{where}: cannot set a key inside {node!r}.")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def load_config(
    config: str | os.PathLike | dict[str, Any] | TrainConfig, overrides: Sequence[tuple[str, Any]] = ()
) -> TrainConfig:
    """The `TrainConfig` of a training YAML (path) or mapping of the same shape, with `overrides` applied (see
    `parse_overrides`). Raises `ValueError` naming the file and line of a YAML syntax error, and the key path of
    an unknown key or a value of the wrong type."""
    if isinstance(config, TrainConfig):
        if overrides:
            raise ValueError("overrides apply to a YAML file or mapping, not to a built TrainConfig.")
        return config
    if not isinstance(config, dict):
        path = os.fspath(config)
        with open(path) as f:
            try:
                config = yaml.load(f, Loader=_Loader) or {}
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                raise ValueError(f"{path} is not valid YAML{at}: {problem}.") from error
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a mapping with sections model, data, stages, training.")
    for section in ("model", "data", "training"):
        if config.get(section) is None and not any(key.split(".")[0] == section for key, _ in overrides):
            raise ValueError(f"The config needs a `{section}:` section (a mapping).")
    return from_mapping(TrainConfig, apply_overrides(config, overrides), "")
