"""Publishing SmolTolk on the Hugging Face Hub: one Hub-ready folder with everything a user needs.

`export_for_hub(model, out_dir, processor)` writes the weights (safetensors), the config with `auto_map` for
`AutoConfig` / `AutoModel` / `AutoModelForCausalLM`, the model code, the processor (text tokenizer, speech tokenizer,
`processor_config.json` with `auto_map` for `AutoProcessor`) and its code, and a model card (`README.md`) whose
metadata carries the base model, the datasets and, when given, the evaluation results as `model-index`. The folder
loads where this package is not installed:

```python
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
```

`push_to_hub(repo_id, model, processor)` uploads the same folder in one commit; `smoltolk export` writes it locally.

Evaluation results are given in the layout of paper Table 1, as `smoltolk eval` writes them (`results.json`, or one
of its entries): `{task: {setting: accuracy}}` with accuracies as fractions in [0, 1], e.g.
`{"blimp": {"T": 0.794, "S": 0.58}, "tstorycloze": {"S": 0.82, "T->S": 0.752}, "mmlu": {"post": 0.3, "pre": 0.302}}`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from transformers import AutoTokenizer
from transformers.tokenization_utils_base import TOKENIZER_CONFIG_FILE

from .evaluation.benchmarks import ALIASES, BENCHMARKS
from .evaluation.mmlu import HUB_MMLU, MMLU_SUBJECTS
from .evaluation.report import scoring_markdown
from .modeling_smoltolk import SmolTolkForCausalLM
from .pipeline_speech_continuation import check_processor_layout
from .processing_smoltolk import PROCESSOR_CONFIG_NAME, SmolTolkProcessor
from .summary import count_parameters

PAPER_TITLE = "Text-Speech Language Models with Improved Cross-Modal Transfer by Aligning Abstraction Levels"
CITATION = """@misc{cuervo2025smoltolk,
  title  = {Text-Speech Language Models with Improved Cross-Modal Transfer by Aligning Abstraction Levels},
  author = {Cuervo, Santiago and Moumen, Adel and Labrak, Yanis and Khurana, Sameer and Laurent, Antoine and
            Rouvier, Mickael and Marxer, Ricard},
  year   = {2025},
}"""
TAGS = ["smoltolk", "text-speech-language-model", "speech", "speech-continuation", "custom_code"]

# Paper Table 1 column groups, in order: results key -> (heading, Hub dataset id or None, settings in order), from
# the benchmark registry. Settings: S / T = speech / text context and continuation; T->S / S->T = cross-modal;
# MMLU pre / post speech training.
TABLE1: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    b.key: (b.heading, b.hub_dataset, b.settings) for b in BENCHMARKS.values()
}
# Entries of a `smoltolk eval` result that are not Table 1 accuracies.
_NOT_ACCURACIES = ("model", "speech_nll", "segmentation", "details", "options", "mmlu_task")

ResultsInput = Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | os.PathLike


def _results_entry(results: ResultsInput, model_name: str | None = None) -> Mapping[str, Any]:
    """The one result dict of `results` (a dict, a list of them, or a JSON file of either; see `load_results`)."""
    if isinstance(results, (str, os.PathLike)):
        with open(results) as f:
            results = json.load(f)
    if isinstance(results, Sequence):
        entries = [r for r in results if len(results) == 1 or r.get("model") == model_name]
        if len(entries) != 1:
            raise ValueError(
                f"the results list has {len(results)} entries; pass model_name= to pick one of "
                f"{[r.get('model') for r in results]}"
            )
        results = entries[0]
    if not isinstance(results, Mapping):
        kind = type(results).__name__
        raise ValueError(f"results must be a dict {{task: {{setting: accuracy}}}}, got {kind}")  # noqa: TRY004
    return results


def mmlu_label(run: Mapping[str, Any] | None) -> dict[str, Any]:
    """How the card names an MMLU score, from what `smoltolk eval` recorded of the run (`results["mmlu_task"]`:
    task, dataset, split, subjects, metric, average, few-shot count, limit).

    Only a run of all 57 subjects of the Hub's `cais/mmlu` test split without a limit is labelled `cais/mmlu`; a
    local copy, a subset or a limited run is labelled by its task and subjects, and a score without a record of
    its run claims no dataset.
    """
    if not run:
        return {"dataset_type": "MMLU", "dataset_name": "MMLU", "note": "MMLU: task and data not recorded."}
    subjects = list(run.get("subjects") or [])
    full = bool(run.get("full_mmlu"))
    source = HUB_MMLU if full else ("a local copy" if "local" in str(run.get("dataset")) else run.get("dataset"))
    total = len(MMLU_SUBJECTS)
    scope = (
        f"all {total} subjects"
        if len(subjects) == total
        else f"{len(subjects)} of {total} subjects ({', '.join(subjects)})"
    )
    limit = "" if run.get("limit") is None else f", at most {run['limit']} questions per subject"
    note = (
        f"MMLU: lm-eval task `{run.get('task')}`, {run.get('metric', 'acc')} ({run.get('average', 'weighted')} "
        f"average), {run.get('num_fewshot', 0)}-shot, on {source} {run.get('split', 'test')} split, {scope}{limit}."
    )
    return {
        "dataset_type": HUB_MMLU if full else str(run.get("task")),
        "dataset_name": "MMLU" if full else f"MMLU ({run.get('task')}, {scope}{limit})",
        "dataset_split": run.get("split"),
        "dataset_config": "all" if full else ",".join(subjects),
        "metric_name": f"{run.get('metric', 'acc')} ({run.get('average', 'weighted')})",
        "note": note,
    }


def load_results(results: ResultsInput, model_name: str | None = None) -> dict[str, dict[str, float]]:
    """Reads evaluation results into `{task: {setting: accuracy}}` (Table 1 tasks first, in the paper's order).

    Args:
        results: a dict `{task: {setting: accuracy}}` (extra `smoltolk eval` entries such as `model` or
            `speech_nll` are ignored), a list of such dicts (`smoltolk eval`'s `results.json`: the one entry, or
            the one whose `model` is `model_name`), or the path of a JSON file holding either.
        model_name: picks the entry of a list with several.

    Raises:
        ValueError: on an accuracy outside [0, 1] or not a number, a malformed entry, or an ambiguous list.
    """
    results = _results_entry(results, model_name)
    table: dict[str, dict[str, float]] = {}
    for task, settings in results.items():
        if task in _NOT_ACCURACIES:
            continue
        if not isinstance(settings, Mapping):
            raise ValueError(f"results[{task!r}] must map settings to accuracies, got {settings!r}")  # noqa: TRY004
        key = ALIASES.get(task.lower(), task.lower()) if task.lower() in {*TABLE1, *ALIASES} else task
        for setting, value in settings.items():
            if value is None:
                continue  # not evaluated
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"results[{task!r}][{setting!r}] = {value!r}: accuracies are fractions in [0, 1] (as "
                    "`smoltolk eval` writes them); divide percentages by 100"
                )
            table.setdefault(key, {})[str(setting).replace("→", "->")] = float(value)

    def setting_order(task: str, setting: str) -> tuple[int, str]:
        known = TABLE1.get(task, ("", None, ()))[2]
        return (known.index(setting), "") if setting in known else (len(known), setting)

    order = [t for t in TABLE1 if t in table] + sorted(t for t in table if t not in TABLE1)
    return {t: dict(sorted(table[t].items(), key=lambda item: setting_order(t, item[0]))) for t in order}


def eval_results(results: ResultsInput, model_name: str | None = None) -> list[EvalResult]:
    """The results as `huggingface_hub.EvalResult`s for the card's `model-index`, accuracies in percent.

    One entry per task and setting (the setting is the dataset config). MMLU "pre" is the backbone's score before
    speech training, not this model's, so it is shown in the card's table but left out of the metadata; MMLU is
    labelled by what was run (`mmlu_label`).
    """
    entry = _results_entry(results, model_name)
    mmlu = mmlu_label(entry.get("mmlu_task"))
    out = []
    for task, settings in load_results(entry).items():
        heading, dataset_id, _ = TABLE1.get(task, (task, None, ()))
        for setting, accuracy in settings.items():
            if task == "mmlu" and setting == "pre":
                continue
            label = {
                "dataset_type": dataset_id or heading,
                "dataset_name": heading,
                "dataset_config": setting,
                "metric_name": f"accuracy ({setting.replace('->', '→')})",
            }
            if task == "mmlu":
                label = {
                    "dataset_type": mmlu["dataset_type"],
                    "dataset_name": mmlu["dataset_name"],
                    "dataset_config": mmlu.get("dataset_config", setting),
                    "dataset_split": mmlu.get("dataset_split"),
                    "metric_name": f"{mmlu.get('metric_name', 'accuracy')} ({setting})",
                }
            out.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Zero-shot likelihood evaluation",
                    metric_type="accuracy",
                    metric_value=round(100 * accuracy, 2),
                    **label,
                )
            )
    return out


def _results_table(results: dict[str, dict[str, float]]) -> str:
    """One markdown row in the paper Table 1 layout (percent, one decimal), with the columns that have results."""
    header, cells = [], []
    for task, settings in results.items():
        heading = TABLE1.get(task, (task,))[0]
        if task == "mmlu" and {"post", "pre"} <= settings.keys():
            header.append("MMLU T (post/pre)")
            cells.append(f"{100 * settings['post']:.1f} / {100 * settings['pre']:.1f}")
            settings = {k: v for k, v in settings.items() if k not in ("post", "pre")}
        for setting, accuracy in settings.items():
            header.append(f"{heading} {setting.replace('->', '→')}")
            cells.append(f"{100 * accuracy:.1f}")
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(cells) + " |"])


_CARD_BODY = """# {model_name}

A SmolTolk text-speech language model (paper: *{paper}*){built_on}. It reads and writes text and speech units in one
id space. The modality of each generated token is decided by the last input token, so a continuation stays in one
modality and a marker (`<|text|>` / `<|speech|>`) switches it.

## Model details

| | |
|---|---|
| backbone | Llama, {c.num_hidden_layers} layers, d={c.hidden_size}, {c.num_attention_heads} heads \
({c.num_key_value_heads} KV), text vocabulary {c.vocab_size} |
| speech | {c.num_speech_units} units; input adapter {c.num_input_adapter_layers} layers, output adapter \
{c.num_output_adapter_layers} layers; {pooling} |
| parameters | {text_params:,} text (backbone), {speech_params:,} speech |
| context | {c.max_position_embeddings} tokens |

## Usage

The model and processor code ship with the weights (`trust_remote_code=True`):

```python
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)

# Speech prompt, speech continuation (the authors sample speech at temperature 0.8, top-k 50).
inputs = processor({speech_prompt}, return_tensors="pt")
out = model.generate(**inputs, do_sample=True, temperature=0.8, top_k=50, max_new_tokens=100)
units = processor.decode(out[0, inputs["input_ids"].shape[1]:])  # [("speech", unit ids)]

# Text prompt, speech continuation: append the <|speech|> marker.
ids = processor(text="Once upon a time", return_tensors="pt")["input_ids"]
ids = torch.cat([ids, torch.tensor([[processor.speech_marker_id]])], dim=1)
out = model.generate(ids, do_sample=True, temperature=0.8, top_k=50, max_new_tokens=100)
```

With the `smoltolk-hf` package installed, the `speech-continuation` pipeline does this for text, audio, unit or
interleaved prompts (and returns audio when given a unit vocoder):

```python
import smoltolk_hf  # registers the pipeline
from transformers import pipeline

pipe = pipeline("speech-continuation", model="{repo}")
pipe("Once upon a time", continuation="speech")
```
{evaluation}
## Citation

```bibtex
{citation}
```
"""
_EVALUATION = """
## Evaluation

Zero-shot accuracy (%) in the layout of paper Table 1 (S: speech, T: text, T→S: text context and speech
continuation, S→T the reverse; MMLU before (pre) and after (post) speech training):

{table}
"""


def example_units(config: Any) -> list[int]:
    """Four unit ids for the card's examples, valid for the model's unit count (`[12, 7, 431, 98]` at 500)."""
    return [unit % config.num_speech_units for unit in (12, 7, 431, 98)]


def model_card(
    model: SmolTolkForCausalLM,
    model_name: str,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    results: ResultsInput | None = None,
    license: str = "apache-2.0",
    has_speech_tokenizer: bool = True,
) -> ModelCard:
    """Builds the model card: metadata (base model, datasets, tags, `model-index` from `results`), a description
    of the architecture read from the config, a usage snippet, the evaluation table and the paper citation."""
    config = model.config
    entry = _results_entry(results, model_name) if results is not None else None
    table = load_results(entry) if entry is not None else None
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        language=["en"],
        license=license,
        library_name="transformers",
        tags=TAGS,
        eval_results=eval_results(entry) if table else None,
    )
    if config.use_dynamic_pooling:
        pooling = "dynamic multi-level pooling (static weights and an input-dependent selector)"
    else:
        pooling = "static multi-level pooling" if config.use_layer_pooling else "last layer only"
    if config.pooling_norm == "rmsnorm":
        pooling += " over RMS-normalised layer outputs"
    if config.speech_embedding_scale != 1.0:
        pooling += f"; speech embedding lookups scaled by {config.speech_embedding_scale:g}"
    counts = count_parameters(model)
    body = _CARD_BODY.format(
        model_name=model_name,
        paper=PAPER_TITLE,
        built_on=f", built on [`{base_model}`](https://huggingface.co/{base_model})" if base_model else "",
        c=config,
        pooling=pooling + ("; raw-embedding residual" if config.use_speech_residual else ""),
        text_params=counts.text,
        speech_params=counts.speech,
        repo=repo_id or model_name,
        speech_prompt='audio="prompt.wav"' if has_speech_tokenizer else f"units={example_units(config)}",
        evaluation=_EVALUATION.format(
            table="\n\n".join(
                part
                for part in (
                    _results_table(table),
                    scoring_markdown([entry], paths=False),
                    mmlu_label(entry.get("mmlu_task"))["note"] if "mmlu" in table else "",
                )
                if part
            )
        )
        if table
        else "",
        citation=CITATION,
    )
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def export_for_hub(
    model: SmolTolkForCausalLM,
    out_dir: str | os.PathLike,
    processor: SmolTolkProcessor | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    results: ResultsInput | None = None,
    license: str = "apache-2.0",
    overwrite: bool = False,
) -> Path:
    """Writes the Hub-ready folder: weights, config, model code, processor and its code, and `README.md`.

    The folder is written under a temporary name next to `out_dir` and renamed into place once complete, so it
    holds exactly this export: nothing of what was there before (an older `speech_tokenizer/`, a README) is kept
    or reloaded with it.

    Args:
        model: the SmolTolk model.
        out_dir: the folder (created if needed).
        processor: its `SmolTolkProcessor`; strongly recommended (without it users must build joint ids by hand).
        model_name: the card's title and `model-index` name (default: the last part of `repo_id`, else of `out_dir`).
        repo_id: the Hub repository the folder is meant for (used in the usage snippet).
        base_model: Hub id of the text LM it was built from, e.g. `"HuggingFaceTB/SmolLM2-135M"`.
        datasets: Hub ids of the training datasets.
        results: evaluation results, see `load_results`.
        license: the card's license.
        overwrite: replace the contents of a non-empty `out_dir`; without it such a folder is refused.

    Returns:
        The folder.

    Raises:
        FileExistsError: `out_dir` is a file, or a non-empty folder and `overwrite` is not set.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"Cannot export to {str(out_dir)!r}: it is a file. Choose a folder path.")
    existing = sorted(path.name for path in out_dir.iterdir()) if out_dir.is_dir() else []
    if existing and not overwrite:
        shown = ", ".join(existing[:6]) + (" ..." if len(existing) > 6 else "")
        raise FileExistsError(
            f"Cannot export to {str(out_dir)!r}: the folder is not empty ({shown}) and the export would replace it. "
            "Choose a new or empty folder, or pass overwrite=True (`smoltolk export ... --overwrite`) to replace "
            "its contents."
        )
    if model_name is None:
        model_name = (repo_id or str(out_dir.resolve())).rstrip("/").split("/")[-1]
    if processor is not None:
        check_processor_layout(processor, model.config)
    card = model_card(
        model, model_name, repo_id, base_model, datasets, results, license,
        has_speech_tokenizer=processor is not None and processor.speech_tokenizer is not None,
    )  # fmt: skip
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.export-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)  # a leftover of an export of this process id that was killed
    try:
        model.save_pretrained(staging)
        if processor is not None:
            type(processor).register_for_auto_class()  # ship the processor code with an AutoProcessor auto_map
            processor.save_pretrained(staging)
        card.save(staging / "README.md")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():  # empty, or replaced with `overwrite`
        replaced = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
        out_dir.rename(replaced)
        staging.rename(out_dir)
        shutil.rmtree(replaced)
    else:
        staging.rename(out_dir)
    return out_dir


def push_to_hub(
    repo_id: str,
    model: SmolTolkForCausalLM,
    processor: SmolTolkProcessor | None = None,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload SmolTolk model, processor and model card",
    **export_kwargs: Any,
) -> CommitInfo:
    """Uploads weights, processor, remote code and a generated model card to `repo_id` in one commit.

    The repository is created if needed. `export_kwargs` (`model_name`, `base_model`, `datasets`, `results`,
    `license`) go to `export_for_hub`.
    """
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as folder:
        export_for_hub(model, folder, processor, repo_id=repo_id, **export_kwargs)
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )


def folder_processor(folder: str, model: SmolTolkForCausalLM) -> SmolTolkProcessor | None:
    """The processor a local folder holds: a saved `SmolTolkProcessor`, else (a folder with a text tokenizer only,
    as older training runs wrote) one built from that tokenizer and the model's id layout, else None."""
    if os.path.isfile(os.path.join(folder, PROCESSOR_CONFIG_NAME)):
        return SmolTolkProcessor.from_pretrained(folder)
    if os.path.isfile(os.path.join(folder, TOKENIZER_CONFIG_FILE)):
        return SmolTolkProcessor.from_config(AutoTokenizer.from_pretrained(folder), None, model.config)
    return None


def cli_export(argv: Sequence[str] | None = None) -> int:
    """`smoltolk export MODEL_DIR OUT_DIR [--processor DIR] [--results JSON] ...`: the Hub-ready folder, locally."""
    parser = argparse.ArgumentParser(
        prog="smoltolk export",
        description="Write a Hub-ready SmolTolk folder: weights, processor, remote code and a model card.",
    )
    parser.add_argument("model_dir", help="a saved SmolTolk model folder (or Hub id)")
    parser.add_argument("out_dir")
    parser.add_argument("--processor", default=None, help="SmolTolkProcessor folder (default: the model folder's)")
    parser.add_argument("--results", default=None, help="evaluation results JSON (`smoltolk eval`'s results.json)")
    parser.add_argument("--model-name", default=None, help="card title and model-index name (default: OUT_DIR's)")
    parser.add_argument("--repo-id", default=None, help="the Hub repository it is for (used in the usage snippet)")
    parser.add_argument("--base-model", default=None, help="Hub id of the text LM it was built from")
    parser.add_argument("--dataset", action="append", default=None, help="Hub id of a training dataset (repeat)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT_DIR")
    args = parser.parse_args(argv)

    model = SmolTolkForCausalLM.from_pretrained(args.model_dir)
    if args.processor is not None:
        processor = SmolTolkProcessor.from_pretrained(args.processor)
    else:
        processor = folder_processor(args.model_dir, model)
    if processor is None:
        print("warning: no processor (pass --processor DIR); the folder will hold the model only")
    elif processor.speech_tokenizer is None:
        print("note: the processor has no speech tokenizer; the card shows speech prompts as unit ids")
    out = export_for_hub(
        model, args.out_dir, processor,
        model_name=args.model_name, repo_id=args.repo_id, base_model=args.base_model, datasets=args.dataset,
        results=args.results, license=args.license, overwrite=args.overwrite,
    )  # fmt: skip
    print(out)
    return 0


__all__ = [
    "CITATION",
    "TABLE1",
    "cli_export",
    "eval_results",
    "export_for_hub",
    "load_results",
    "model_card",
    "push_to_hub",
]
