"""The paper's evaluation (section 4.2, 5.2, appendix C): likelihood pairs in four settings, MMLU, speech NLL,
word segmentation from the dynamic layer weights, intrinsic dimension and cross-modal subspace overlap.

Heavy or optional parts (plots: matplotlib; MMLU: lm-evaluation-harness; GRIDE: dadapy in its own environment)
are imported from their modules only when used.
"""

from .benchmarks import BENCHMARKS, Benchmark
from .nll import speech_nll
from .pairs import (
    SETTINGS,
    ClozeItem,
    Pair,
    build_pairs,
    load_authors_crossmodal,
    load_benchmark,
    load_crossmodal_storycloze,
    load_pair_manifest,
    load_sblimp,
    load_spoken_storycloze,
    load_storycloze_csv,
    tokenize_speech,
)
from .report import format_report, table1_markdown, write_report
from .scoring import (
    PROTOCOLS,
    PairScores,
    ScoringOptions,
    evaluate_items,
    score_pairs,
    token_log_probs,
)
from .segmentation import (
    boundary_scores,
    evaluate_segmentation,
    layer_weights,
    tune_prominence,
    word_boundaries,
)

__all__ = [
    "BENCHMARKS",
    "PROTOCOLS",
    "SETTINGS",
    "Benchmark",
    "ClozeItem",
    "Pair",
    "PairScores",
    "ScoringOptions",
    "boundary_scores",
    "build_pairs",
    "evaluate_items",
    "evaluate_segmentation",
    "format_report",
    "layer_weights",
    "load_authors_crossmodal",
    "load_benchmark",
    "load_crossmodal_storycloze",
    "load_pair_manifest",
    "load_sblimp",
    "load_spoken_storycloze",
    "load_storycloze_csv",
    "score_pairs",
    "speech_nll",
    "table1_markdown",
    "token_log_probs",
    "tokenize_speech",
    "tune_prominence",
    "word_boundaries",
    "write_report",
]
