"""Parameter accounting as in paper Table 5 (text vs speech parameters, layers in all)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .modeling_smoltolk import BACKBONE_PARAMETER_PREFIXES

# Paper Table 5: (layers in all, text parameters, speech parameters).
PAPER_TABLE5: dict[str, tuple[int, float, float]] = {
    "baseline-135m": (30, 135e6, 0.29e6),
    "baseline-360m": (32, 360e6, 0.48e6),
    "baseline-1.7b": (24, 1.7e9, 1e6),
    "smoltolk-150m": (34, 135e6, 15e6),
    "smoltolk-400m": (36, 360e6, 40e6),
    "smoltolk-2b": (28, 1.7e9, 270e6),
}

@dataclass
class ParameterCount:
    layers: int
    text: int  # backbone and text embeddings (the text LM)
    speech: int  # everything SmolTolk adds: markers, speech table, adapters, pooling


def count_parameters(model: nn.Module) -> ParameterCount:
    """Counts a `SmolTolkForCausalLM`'s parameters the way paper Table 5 does (tied matrices once)."""
    text = speech = 0
    for name, parameter in model.named_parameters():  # named_parameters yields tied tensors once
        if name.startswith(BACKBONE_PARAMETER_PREFIXES):
            text += parameter.numel()
        else:
            speech += parameter.numel()
    return ParameterCount(layers=model.config.num_total_layers, text=text, speech=speech)


def format_parameter_table(rows: dict[str, ParameterCount]) -> str:
    """Markdown table of measured counts beside paper Table 5."""
    lines = [
        "| model | layers | paper layers | text params | paper text | speech params | paper speech |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, count in rows.items():
        layers, text, speech = PAPER_TABLE5.get(name, (None, None, None))
        lines.append(
            f"| {name} | {count.layers} | {layers or '-'} | {count.text / 1e6:.1f}M | "
            f"{'-' if text is None else f'{text / 1e6:.0f}M'} | {count.speech / 1e6:.2f}M | "
            f"{'-' if speech is None else f'{speech / 1e6:.2f}M'} |"
        )
    return "\n".join(lines)
