"""The benchmarks of paper Table 1 in one place: results key, CLI flag, table heading and columns, Hub dataset id,
loader, and the authors' tie rule and averaging for each.

`smoltolk eval` makes one `--<flag>` per benchmark, the results tables (`report`) and the model card (`hub`) take
their columns and labels from here, and scoring takes the tie rule and averaging of the `"authors"` protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .mmlu import HUB_MMLU
from .pairs import ClozeItem, load_benchmark

STORYCLOZE_SETTINGS = ("T", "S", "T->S", "S->T")  # Table 1 column order


@dataclass(frozen=True)
class Benchmark:
    """One Table 1 column group.

    Attributes:
        key: the results key (`results.json`, model card).
        heading: the Table 1 heading.
        settings: the Table 1 columns of the group, in the paper's order.
        flag: the `smoltolk eval` option (`--<flag>`) that takes its data, if any.
        hub_dataset: the Hub dataset id the model card names, when the benchmark has an official one.
        loader: reads the benchmark (`loader(path, split)`); None when it is not a likelihood-pair benchmark.
        ties: the authors' value of a tie: `"wrong"` (their StoryCloze `>`) or `"half"` (the ZeroSpeech toolkit).
        average: the authors' aggregation: `"micro"` (mean over pairs) or `"macro"` (mean over groups).
        help: what the flag takes.
    """

    key: str
    heading: str
    settings: tuple[str, ...]
    flag: str | None = None
    hub_dataset: str | None = None
    loader: Callable[[str, str], list[ClozeItem]] | None = None
    ties: str = "wrong"
    average: str = "micro"
    help: str = ""


BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in (
        Benchmark(
            "blimp",
            "BLIMP",
            ("T", "S"),
            flag="sblimp",
            loader=load_benchmark,
            ties="half",
            average="macro",
            help="ZeroSpeech sLM21 sBLIMP: the syntactic folder (its --split), a split folder or its gold.csv",
        ),
        Benchmark(
            "tstorycloze",
            "tStoryCloze",
            STORYCLOZE_SETTINGS,
            flag="tstorycloze",
            loader=load_benchmark,
            help="Topic-StoryCloze: the authors' cross-modal folder, TWIST's tSC folder, or any load_benchmark layout",
        ),
        Benchmark(
            "sstorycloze",
            "sStoryCloze",
            STORYCLOZE_SETTINGS,
            flag="sstorycloze",
            loader=load_benchmark,
            help="spoken StoryCloze: the authors' cross-modal folder, TWIST's sSC folder, or any load_benchmark layout",
        ),
        # The card names cais/mmlu only for a run of its whole test split (hub.mmlu_label).
        Benchmark("mmlu", "MMLU", ("post", "pre"), flag="mmlu", hub_dataset=HUB_MMLU),
    )
}
PAIR_BENCHMARKS: tuple[Benchmark, ...] = tuple(b for b in BENCHMARKS.values() if b.loader is not None)
ALIASES = {"sblimp": "blimp"}  # other names a results file may use for a key
