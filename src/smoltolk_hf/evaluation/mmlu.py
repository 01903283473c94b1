"""MMLU (and any lm-evaluation-harness task) on SmolTolk's text path.

The text path of a SmolTolk is its backbone: `text_causal_lm` exposes it as a plain `LlamaForCausalLM` that shares
the SmolTolk's modules (no copy), so lm-evaluation-harness runs it as any Hugging Face causal LM. "Pre" and "post"
speech training (paper Table 1) are the same call on the backbone before training and on the trained SmolTolk.

The default task, `smollm_mmlu_cloze`, is MMLU as SmolLM measures it (the evaluation guidelines the paper follows):
SmolLM's lighteval cloze prompt, zero-shot, `acc` and `acc_norm` (see `lm_eval_tasks/smollm_mmlu_cloze.yaml`), one
lm-eval task per subject written by `write_smollm_mmlu_tasks`, on the Hub's `cais/mmlu` or on a local copy. Every
group score is reported two ways: `weighted` (over questions, lm-eval's group aggregate and SmolLM2's `mmlu_cf`,
which scores all subjects as one set) and `macro` (the mean of the per-subject scores, SmolLM's
`mmlu_cloze:_average`).

lm-evaluation-harness is the optional extra `eval` (`pip install ".[eval]"`, `lm_eval==0.4.13`).
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

SMOLLM_MMLU_TASK = "smollm_mmlu_cloze"
HUB_MMLU = "cais/mmlu"
_TEMPLATE = os.path.join(os.path.dirname(__file__), "lm_eval_tasks", f"{SMOLLM_MMLU_TASK}.yaml")
# The 57 subjects of MMLU (cais/mmlu configs, test split: 14,042 questions).
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)  # fmt: skip
_FILE_LOADERS = ("parquet", "json", "csv", "arrow", "text")  # dataset_path values that read local data files


def text_causal_lm(model: Any) -> LlamaForCausalLM:
    """SmolTolk's text path as a `LlamaForCausalLM` sharing the backbone modules (its logits are SmolTolk's text
    logits)."""
    config = model.config
    fields = {k: v for k, v in config.to_dict().items() if k in LlamaConfig.__dataclass_fields__}
    fields.pop("model_type", None)
    llama_config = LlamaConfig(**fields)
    llama_config._attn_implementation = config._attn_implementation
    with torch.device("meta"):
        text_model = LlamaForCausalLM(llama_config)
    backbone = model.model
    text_model.model.embed_tokens = backbone.embed_tokens
    text_model.model.layers = nn.ModuleList(backbone.layers[: config.num_hidden_layers])
    text_model.model.norm = backbone.norm
    text_model.model.rotary_emb = backbone.rotary_emb
    text_model.lm_head = model.lm_head
    return text_model.eval()


def write_smollm_mmlu_tasks(
    out_dir: str | os.PathLike,
    data: str | os.PathLike | None = None,
    subjects: Sequence[str] | None = None,
) -> str:
    """Writes the `smollm_mmlu_cloze` lm-eval tasks (one per subject) and their group to `out_dir`, for
    `TaskManager(include_path=out_dir)` or `lm_eval --include_path out_dir`; returns the group name.

    Args:
        data: `None` for the Hub's `cais/mmlu` (or its copy in the datasets cache), or a local copy in the Hub
            repository's layout: `<data>/<subject>/test-*.parquet` (and `dev-*.parquet` for few-shot), as
            `hf download cais/mmlu --repo-type dataset --local-dir <data>` writes it.
        subjects: the subjects to write (default: all 57; with `data`, those the copy has).
    """
    if subjects is not None:
        unknown = sorted(set(subjects) - set(MMLU_SUBJECTS))
        if unknown or not subjects:
            raise ValueError(f"unknown MMLU subjects {unknown or list(subjects)}; the subjects are {MMLU_SUBJECTS}")
    data_files: dict[str, dict[str, str]] = {}
    if data is not None:
        data = os.path.abspath(os.fspath(data))
        for subject in subjects or MMLU_SUBJECTS:
            splits = {
                split: os.path.join(data, subject, f"{split}-*.parquet")
                for split in ("test", "dev")
                if glob.glob(os.path.join(data, subject, f"{split}-*.parquet"))
            }
            if "test" in splits:
                data_files[subject] = splits
        missing = sorted(set(subjects or ()) - set(data_files))
        if missing or not data_files:
            raise ValueError(
                f"the MMLU copy at {data} has no {missing or 'subject'} test data: expected "
                "<subject>/test-*.parquet files, as `hf download cais/mmlu --repo-type dataset "
                "--local-dir DIR` writes them"
            )
        subjects = [s for s in MMLU_SUBJECTS if s in data_files]
    subjects = list(subjects or MMLU_SUBJECTS)
    with open(_TEMPLATE) as f:
        template = yaml.safe_load(f)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tasks = []
    for subject in subjects:
        config = {
            **template,
            "task": f"{SMOLLM_MMLU_TASK}_{subject}",
            "dataset_name": subject,
            "description": f"The following are questions about {subject.replace('_', ' ')}.\n",
            "metadata": {**template["metadata"], "subject": subject, "source": data or HUB_MMLU},
        }
        if data is not None:
            config.update(dataset_path="parquet", dataset_kwargs={"data_files": data_files[subject]})
            del config["dataset_name"]  # the parquet loader has no subject configs
            if "dev" not in data_files[subject]:
                del config["fewshot_split"], config["fewshot_config"]
        tasks.append(config["task"])
        with open(os.path.join(out_dir, f"{config['task']}.yaml"), "w") as f:
            yaml.safe_dump(config, f, sort_keys=False)
    group = {
        "group": SMOLLM_MMLU_TASK,
        "task": tasks,
        "aggregate_metric_list": [{"metric": m, "weight_by_size": True} for m in ("acc", "acc_norm")],
        "metadata": template["metadata"],
    }
    with open(os.path.join(out_dir, f"{SMOLLM_MMLU_TASK}.yaml"), "w") as f:
        yaml.safe_dump(group, f, sort_keys=False)
    return SMOLLM_MMLU_TASK


@dataclass
class LmEvalRun:
    """What one lm-evaluation-harness run scored.

    Attributes:
        metrics: `{task or group: {metric: value}}`, metric names without lm-eval's `,none` filter suffix, standard
            errors as `<metric>_stderr`.
        subtasks: `{group: [tasks and subgroups]}` (lm-eval's `group_subtasks`).
        sizes: `{task: documents scored}`.
        datasets: `{task: {"path", "name", "split", "data_files", "subject"}}`, what each task read.
        num_fewshot: the few-shot count of the run; `limit`: lm-eval's `limit` (None: every document).
    """

    metrics: dict[str, dict[str, float]]
    subtasks: dict[str, list[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_fewshot: int | None = 0
    limit: float | None = None

    @classmethod
    def from_output(cls, output: dict[str, Any], num_fewshot: int | None, limit: float | None) -> LmEvalRun:
        """From the dict `lm_eval.simple_evaluate` returns."""
        metrics = {
            task: {
                name.split(",")[0].replace("_stderr", "") + ("_stderr" if "_stderr" in name else ""): float(value)
                for name, value in values.items()
                if isinstance(value, (int, float)) and "," in name
            }
            for task, values in output["results"].items()
        }
        datasets = {}
        for task, config in output.get("configs", {}).items():
            kwargs = config.get("dataset_kwargs") or {}
            datasets[task] = {
                "path": config.get("dataset_path"),
                "name": config.get("dataset_name"),
                "split": config.get("test_split"),
                "data_files": kwargs.get("data_files"),
                "subject": (config.get("metadata") or {}).get("subject", config.get("dataset_name")),
            }
        return cls(
            metrics=metrics,
            subtasks={g: list(t) for g, t in output.get("group_subtasks", {}).items()},
            sizes={t: int(n["effective"]) for t, n in output.get("n-samples", {}).items()},
            datasets=datasets,
            num_fewshot=num_fewshot,
            limit=limit,
        )

    def leaves(self, name: str) -> list[str]:
        """The tasks under `name` (itself if it is a task), subgroups expanded."""
        if name not in self.subtasks:
            return [name]
        return [leaf for sub in self.subtasks[name] for leaf in self.leaves(sub)]

    def summary(self, name: str, metric: str = "acc_norm") -> dict[str, Any]:
        """`metric` of a task or group: `weighted` (over documents, lm-eval's aggregate) and `macro` (mean over the
        tasks under the group), the per-task values, and what was run (`describe`)."""
        leaves = self.leaves(name)
        if name not in self.metrics:
            raise KeyError(f"lm-eval reported no task or group {name!r}; it reported {sorted(self.metrics)}")
        lacking = [t for t in leaves if metric not in self.metrics.get(t, {})]
        if lacking:
            have = sorted({m for t in leaves for m in self.metrics.get(t, {}) if not m.endswith("_stderr")})
            raise KeyError(f"task(s) {lacking[:3]} of {name!r} report no {metric!r}; they report {have}")
        values = {t: self.metrics[t][metric] for t in leaves}
        sizes = [self.sizes[t] for t in leaves]
        weighted = sum(values[t] * n for t, n in zip(leaves, sizes)) / sum(sizes)
        return {
            "metric": metric,
            "weighted": weighted,
            "macro": sum(values.values()) / len(values),
            "per_task": values,
            **self.describe(name),
        }

    def describe(self, name: str) -> dict[str, Any]:
        """What `name` ran on: `dataset` (the Hub id, or `local files under <dir>`), its `split`, the `subjects`,
        `num_questions`, few-shot count and limit, and `full_mmlu`: true only for every one of the 57 subjects of
        the Hub's `cais/mmlu` test split, unlimited (the only run a model card may label `cais/mmlu`)."""
        leaves = self.leaves(name)
        infos = [self.datasets.get(t, {}) for t in leaves]
        sources, files, local = set(), [], False
        for info in infos:
            if info.get("path") in _FILE_LOADERS or info.get("data_files"):
                local = True
                for value in (info.get("data_files") or {}).values():
                    files += [value] if isinstance(value, str) else list(value)
            else:
                sources.add(str(info.get("path")))
        if local:
            sources.add(f"local files under {os.path.commonpath(files)}" if files else "local files")
        subjects = sorted(str(info.get("subject") or t) for info, t in zip(infos, leaves))
        splits = sorted({str(info.get("split")) for info in infos})
        dataset = " + ".join(sorted(sources))
        return {
            "task": name,
            "dataset": dataset,
            "split": " + ".join(splits),
            "subjects": subjects,
            "num_questions": sum(self.sizes.get(t, 0) for t in leaves),
            "num_fewshot": self.num_fewshot,
            "limit": self.limit,
            "full_mmlu": dataset == HUB_MMLU
            and splits == ["test"]
            and subjects == sorted(MMLU_SUBJECTS)
            and self.limit is None,
        }


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str] = (SMOLLM_MMLU_TASK,),
    num_fewshot: int | None = 0,
    batch_size: int = 8,
    limit: float | None = None,
    include_path: str | os.PathLike | None = None,
    device: str | None = None,
    data: str | os.PathLike | None = None,
    subjects: Sequence[str] | None = None,
) -> LmEvalRun:
    """Runs lm-evaluation-harness `tasks` on the text path of `model` (a SmolTolk or any HF causal LM).

    `smollm_mmlu_cloze` (the default) is written for the run by `write_smollm_mmlu_tasks(data=data,
    subjects=subjects)`; other tasks are lm-eval's own or those in `include_path`.

    Raises:
        ImportError: without lm-evaluation-harness.
        ConnectionError: when a task's Hub data can be neither downloaded nor found in the datasets cache.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise ImportError("MMLU needs lm-evaluation-harness: pip install 'smoltolk-hf[eval]'") from error

    text_model = text_causal_lm(model) if getattr(model.config, "model_type", None) == "smoltolk" else model
    device = device or str(next(text_model.parameters()).device)
    lm = HFLM(pretrained=text_model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    with tempfile.TemporaryDirectory() as task_dir:
        paths = [os.fspath(include_path)] if include_path else []
        if SMOLLM_MMLU_TASK in tasks:
            write_smollm_mmlu_tasks(task_dir, data, subjects)
            paths.append(task_dir)
        # lm-eval's own tasks take ~30 s to index: only when a task is not ours.
        include_defaults = any(task != SMOLLM_MMLU_TASK for task in tasks)
        task_manager = TaskManager(include_path=paths or None, include_defaults=include_defaults)
        try:
            output = lm_eval.simple_evaluate(
                model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, task_manager=task_manager
            )
        except ConnectionError as error:
            raise ConnectionError(
                f"the data of lm-eval task(s) {list(tasks)} is not available: no network and no cached copy "
                f"({error}); download it once with network access (MMLU: `hf download cais/mmlu "
                "--repo-type dataset --local-dir DIR`) and pass data=DIR (smoltolk eval: --mmlu-data DIR)"
            ) from error
    return LmEvalRun.from_output(output, num_fewshot, limit)
