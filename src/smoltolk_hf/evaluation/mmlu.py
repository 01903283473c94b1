"""MMLU (and any lm-evaluation-harness task) on SmolTolk's text path.

The text path of a SmolTolk is its backbone: `text_causal_lm` exposes it as a plain `LlamaForCausalLM` that shares
the SmolTolk's modules (no copy), so lm-evaluation-harness runs it as any Hugging Face causal LM. "Pre" and "post"
speech training (paper Table 1) are the same call on the backbone before training and on the trained SmolTolk.

lm-evaluation-harness is the optional extra `eval` (`pip install ".[eval]"`, `lm_eval==0.4.13`); its built-in MMLU
tasks download their data from the Hub. The default task is `mmlu_continuation`, lm-eval's cloze formulation
(answers scored as text), the closest match to the SmolLM evaluation guidelines the paper follows (lighteval,
cloze formulation); `mmlu` is the lettered multiple-choice formulation. `include_path` adds local task YAMLs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM


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


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[str] = ("mmlu_continuation",),
    num_fewshot: int | None = 0,
    batch_size: int = 8,
    limit: float | None = None,
    include_path: str | os.PathLike | None = None,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """Runs lm-evaluation-harness `tasks` on the text path of `model` (a SmolTolk or any HF causal LM).

    Returns:
        `{task: {metric: value}}` for every task and group lm-eval reports (metric names without the `,none`
        filter suffix; standard errors as `<metric>_stderr`).
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
    task_manager = TaskManager(include_path=os.fspath(include_path) if include_path else None)
    output = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(tasks),
        num_fewshot=num_fewshot,
        limit=limit,
        task_manager=task_manager,
    )
    results = {}
    for task, metrics in output["results"].items():
        results[task] = {
            name.split(",")[0].replace("_stderr", "") + ("_stderr" if "_stderr" in name else ""): float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float)) and "," in name
        }
    return results
