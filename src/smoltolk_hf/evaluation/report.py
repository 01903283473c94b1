"""Results tables laid out like paper Table 1 (markdown) and the same numbers as JSON.

A result is a dict (what `smoltolk eval` writes to `results.json`):

```
{"model": str,
 "blimp": {"T": acc, "S": acc},                               # accuracies in [0, 1]
 "tstorycloze": {"T": ..., "S": ..., "T->S": ..., "S->T": ...},
 "sstorycloze": {...},
 "mmlu": {"post": acc, "pre": acc}, "mmlu_task": {"task", "dataset", "subjects", "metric", "average", ...},
 "speech_nll": float,
 "segmentation": {"precision", "recall", "f1", "r_value", "prominence", "tolerance", "r_value_definition", "rescale"},
 "details": {benchmark: {"path", "format", setting: {"accuracy", "num_pairs", "scope", "ties", "average"}}, ...},
 "options": {"protocol", "reduction", "scope", "ties", "average", ...}}
```

Every key is optional; missing numbers print as "-".
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .benchmarks import BENCHMARKS, PAIR_BENCHMARKS

TABLE1_COLUMNS: tuple[tuple[str, str], ...] = tuple((b.key, s) for b in PAIR_BENCHMARKS for s in b.settings)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table1_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """Paper Table 1 layout: one row per result, accuracies in percent with one decimal."""
    header = ["Model"] + [f"{BENCHMARKS[b].heading} {s.replace('->', '→')}" for b, s in TABLE1_COLUMNS]
    header.append("MMLU T (post/pre)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        cells = [str(result.get("model", "model"))]
        cells += [_percent(result.get(b, {}).get(s)) for b, s in TABLE1_COLUMNS]
        mmlu = result.get("mmlu", {})
        cells.append(f"{_percent(mmlu.get('post'))} / {_percent(mmlu.get('pre'))}" if mmlu else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def extras_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """Speech NLL (per unit, nats) and word segmentation scores (paper Figure 2 and Table 3), if any result has them."""
    if not any("speech_nll" in r or "segmentation" in r for r in results):
        return ""
    lines = [
        "| Model | speech NLL | seg. precision | seg. recall | seg. F-1 | seg. R-val | prominence |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        segmentation = result.get("segmentation", {})
        nll = result.get("speech_nll")
        lines.append(
            f"| {result.get('model', 'model')} | {'-' if nll is None else f'{nll:.3f}'} | "
            + " | ".join(_percent(segmentation.get(k)) for k in ("precision", "recall", "f1", "r_value"))
            + f" | {segmentation.get('prominence', '-')} |"
        )
    return "\n".join(lines)


def settings_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """How the speech NLL, the segmentation and MMLU were measured, for each result that has them."""
    lines = []
    for result in results:
        model = result.get("model", "model")
        nll = result.get("details", {}).get("speech_nll")
        if nll:
            eos = "end tokens scored" if nll.get("include_eos") else "end tokens not scored"
            lines.append(
                f"- {model}, speech NLL: {nll.get('mode')} mode, windows of {nll.get('max_length')} ids, {eos}, "
                f"{nll.get('num_targets')} targets"
            )
        segmentation = result.get("segmentation")
        if segmentation:
            lines.append(
                f"- {model}, segmentation: R-value with {segmentation.get('r_value_definition')} over-segmentation, "
                f"tolerance {segmentation.get('tolerance')} token(s), peaks on "
                f"{'per-utterance rescaled' if segmentation.get('rescale') else 'raw'} omega^(L)"
            )
        mmlu = result.get("mmlu_task")
        if mmlu:
            lines.append(
                f"- {model}, MMLU: task `{mmlu.get('task')}`, {mmlu.get('metric')} ({mmlu.get('average')} average), "
                f"{mmlu.get('num_fewshot')}-shot, {mmlu.get('dataset')} {mmlu.get('split')} split, "
                f"{len(mmlu.get('subjects', []))} subjects, {mmlu.get('num_questions')} questions"
                + ("" if mmlu.get("limit") is None else f", limit {mmlu['limit']}")
            )
    return "Measured as:\n\n" + "\n".join(lines) if lines else ""


def scoring_markdown(results: Sequence[Mapping[str, Any]], paths: bool = True) -> str:
    """How each benchmark was scored: protocol, what each setting's score covers, tie rule, averaging, data format
    (and its path, with `paths`)."""
    lines = []
    for result in results:
        protocol = result.get("options", {}).get("protocol", "-")
        for benchmark in PAIR_BENCHMARKS:
            details = result.get("details", {}).get(benchmark.key)
            if not details:
                continue
            settings = [s for s in benchmark.settings if s in details] + [
                s for s in details if isinstance(details[s], Mapping) and s not in benchmark.settings
            ]
            scopes = "; ".join(f"{s.replace('->', '→')}: {details[s]['scope']}" for s in settings)
            first = details[settings[0]] if settings else {}
            lines.append(
                f"- {result.get('model', 'model')}, {benchmark.heading}: protocol {protocol}; scored on {scopes}; "
                f"ties {first.get('ties', '-')}, {first.get('average', '-')} average; "
                f"{details.get('format', 'data')}" + (f" `{details.get('path', '-')}`" if paths else "")
            )
    return "Scoring:\n\n" + "\n".join(lines) if lines else ""


def format_report(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown report: the Table 1 layout, how it was scored, then the speech NLL / segmentation table when
    present."""
    parts = [table1_markdown(results), scoring_markdown(results), extras_markdown(results), settings_markdown(results)]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_report(results: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> tuple[str, str]:
    """Writes `results.md` and `results.json` to `out_dir`; returns their paths."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    markdown, data = (
        os.path.join(out_dir, "results.md"),
        os.path.join(out_dir, "results.json"),
    )
    with open(markdown, "w") as f:
        f.write(format_report(results))
    with open(data, "w") as f:
        json.dump(list(results), f, indent=2)
    return markdown, data
