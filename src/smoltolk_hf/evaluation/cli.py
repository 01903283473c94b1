"""`smoltolk eval`: the paper's evaluation of a saved SmolTolk, written as a Table-1-like report.

Example (the paper's data, the authors' protocol):

    smoltolk eval smoltolk-150m --out eval/ \
        --sblimp sLM21-dataset/syntactic --tstorycloze data/tcloze_multimodal --sstorycloze data/scloze_multimodal \
        --speech-nll librispeech-dev-units/ --segmentation timit-test-units/ --representations stinystories-units/ \
        --mmlu --mmlu-pre SmolLM-135M/

writes `eval/results.md` (paper Table 1 layout, how each column was scored, speech NLL / segmentation),
`eval/results.json` and, with `--representations`, Figures 3-5 as PNG files.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .benchmarks import PAIR_BENCHMARKS
from .pairs import LAYOUTS, SETTINGS, benchmark_layout
from .report import format_report, write_report
from .scoring import PROTOCOLS, ScoringOptions, evaluate_items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smoltolk eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="saved SmolTolk folder (or Hub id)")
    parser.add_argument(
        "--processor",
        default=None,
        help="SmolTolkProcessor folder (default: the model folder)",
    )
    parser.add_argument("--out", required=True, help="output folder for results.md / results.json")
    parser.add_argument(
        "--name",
        default=None,
        help="row name in the table (default: the model folder name)",
    )
    for benchmark in PAIR_BENCHMARKS:
        parser.add_argument(f"--{benchmark.flag}", default=None, help=benchmark.help)
    parser.add_argument("--split", default="test", help="split of the data that holds several (the paper: test)")
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        default=None,
        help="default: all available",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="authors",
        help="authors: the paper authors' conventions (BOS, S->T prefix, ties, averaging); package: the earlier ones",
    )
    parser.add_argument("--reduction", choices=("mean", "sum"), default="mean")
    parser.add_argument("--scope", choices=("continuation", "sequence"), default="continuation")
    parser.add_argument(
        "--ties", choices=("wrong", "half"), default=None, help="default: the protocol's rule per benchmark"
    )
    parser.add_argument(
        "--average",
        choices=("macro", "micro"),
        default=None,
        help="over groups (sBLIMP types) or pairs; default: the protocol's rule per benchmark",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the S->T text prefixes (the authors': 42)")
    parser.add_argument("--prefix-tokens", type=int, default=10, help="S->T text prefix length (authors' protocol)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="score only the first N pairs (quick checks; S->T prefixes are then drawn among these N)",
    )
    parser.add_argument(
        "--speech-nll",
        default=None,
        help="units dataset (save_to_disk folder) for the speech NLL",
    )
    parser.add_argument(
        "--nll-mode",
        choices=("utterance", "packed"),
        default="utterance",
        help="utterance: each utterance alone; packed: the training loss on packed windows (paper Figure 2)",
    )
    parser.add_argument(
        "--nll-max-length",
        type=int,
        default=None,
        help="window length in ids (packed: pass the training context length; default: max_position_embeddings)",
    )
    parser.add_argument(
        "--segmentation",
        default=None,
        help="word-aligned units dataset for word segmentation",
    )
    parser.add_argument(
        "--segmentation-r-value",
        choices=("rasanen", "kreuk"),
        default="rasanen",
        help="over-segmentation in the R-value: N_pred/N_ref - 1 (Räsänen) or recall/precision - 1 (UnsupSeg)",
    )
    parser.add_argument(
        "--segmentation-rescale",
        action="store_true",
        help="min-max rescale each utterance's omega^(L) to [0, 1] before peak picking",
    )
    parser.add_argument(
        "--segmentation-tolerance", type=int, default=1, help="boundary match tolerance in tokens (the paper: 1)"
    )
    parser.add_argument(
        "--mmlu",
        action="store_true",
        help="MMLU on the text path (needs the `eval` extra)",
    )
    parser.add_argument(
        "--mmlu-pre",
        default=None,
        help="the text backbone before speech training, for MMLU pre",
    )
    parser.add_argument(
        "--mmlu-tasks",
        nargs="+",
        default=["smollm_mmlu_cloze"],
        help="lm-eval tasks; the first is reported (default: MMLU in SmolLM's cloze formulation)",
    )
    parser.add_argument("--mmlu-metric", default="acc_norm", help="lm-eval metric reported as MMLU (acc, acc_norm)")
    parser.add_argument(
        "--mmlu-average",
        choices=("weighted", "macro"),
        default="weighted",
        help="over questions (lm-eval's group score, SmolLM2's mmlu_cf) or over subjects (SmolLM's mmlu_cloze)",
    )
    parser.add_argument("--mmlu-data", default=None, help="local copy of cais/mmlu (<subject>/test-*.parquet)")
    parser.add_argument("--mmlu-subjects", nargs="+", default=None, help="MMLU subjects (default: all)")
    parser.add_argument("--mmlu-include-path", default=None, help="folder of extra lm-eval task YAMLs")
    parser.add_argument("--mmlu-limit", type=float, default=None)
    parser.add_argument(
        "--representations",
        default=None,
        help="units dataset with text and word alignments (paired samples): writes Figures 3, 4 and 5",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    return parser


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every evaluation the arguments ask for and returns the result dict (see `report`)."""
    import torch
    from datasets import load_from_disk

    from ..modeling_smoltolk import SmolTolkForCausalLM
    from ..processing_smoltolk import SmolTolkProcessor

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SmolTolkForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).to(device).eval()
    processor = SmolTolkProcessor.from_pretrained(args.processor or args.model)
    options = ScoringOptions(
        reduction=args.reduction,
        scope=args.scope,
        ties=args.ties,
        average=args.average,
        batch_size=args.batch_size,
        protocol=args.protocol,
        prefix_tokens=args.prefix_tokens,
        seed=args.seed,
    )
    result: dict[str, Any] = {
        "model": args.name or os.path.basename(os.path.normpath(args.model)),
        "options": options.to_dict(),
        "details": {},
    }
    for benchmark in PAIR_BENCHMARKS:
        path = getattr(args, benchmark.flag)
        if path is None:
            continue
        items = benchmark.loader(path, args.split)[: args.max_pairs]
        scored = evaluate_items(model, processor, items, args.settings, options, benchmark.key)
        result[benchmark.key] = {setting: r["accuracy"] for setting, r in scored.items()}
        layout = LAYOUTS[benchmark_layout(path, args.split)][0]
        result["details"][benchmark.key] = {"path": os.fspath(path), "format": layout, **scored}
    if args.speech_nll:
        from .nll import speech_nll

        units = load_from_disk(args.speech_nll)["units"]
        nll = speech_nll(
            model, processor, units, args.batch_size, args.nll_max_length, mode=args.nll_mode, protocol=args.protocol
        )
        result["speech_nll"] = nll["nll"]
        result["details"]["speech_nll"] = nll
    if args.segmentation:
        from .segmentation import evaluate_segmentation

        segmentation = evaluate_segmentation(
            model,
            processor,
            load_from_disk(args.segmentation),
            args.batch_size,
            tolerance=args.segmentation_tolerance,
            r_value=args.segmentation_r_value,
            rescale=args.segmentation_rescale,
        )
        result["segmentation"] = {k: v for k, v in segmentation.items() if k != "grid"}
        result["details"]["segmentation_grid"] = segmentation["grid"]
    if args.mmlu:
        result["mmlu"], result["mmlu_task"], result["details"]["mmlu"] = _mmlu(
            args, model, processor.tokenizer, device
        )
    if args.representations:
        from .representations import representation_figures

        prominence = result.get("segmentation", {}).get("prominence", 0.05)
        result["details"]["representations"] = representation_figures(
            model, processor, load_from_disk(args.representations), args.out, args.batch_size, prominence=prominence
        )
    return result


def _mmlu(args: argparse.Namespace, model: Any, tokenizer: Any, device: str) -> tuple[dict[str, float], dict, dict]:
    """MMLU post (and pre with `--mmlu-pre`): the reported scores, the record of what was run, the details."""
    from transformers import AutoModelForCausalLM

    from .mmlu import run_lm_eval

    task = args.mmlu_tasks[0]

    def run(lm: Any) -> dict[str, Any]:
        scored = run_lm_eval(
            lm,
            tokenizer,
            args.mmlu_tasks,
            batch_size=args.batch_size,
            limit=args.mmlu_limit,
            include_path=args.mmlu_include_path,
            device=device,
            data=args.mmlu_data,
            subjects=args.mmlu_subjects,
        )
        return scored.summary(task, args.mmlu_metric)

    details = {"post": run(model)}
    if args.mmlu_pre:
        backbone = AutoModelForCausalLM.from_pretrained(args.mmlu_pre, dtype=model.dtype).to(device).eval()
        details["pre"] = run(backbone)
    summary = {stage: scores[args.mmlu_average] for stage, scores in details.items()}
    record = {k: v for k, v in details["post"].items() if k not in ("weighted", "macro", "per_task")}
    return summary, {**record, "average": args.mmlu_average}, details


def cli_eval(argv: list[str] | None = None) -> int:
    """Entry point of `smoltolk eval` (argv without the subcommand)."""
    args = build_parser().parse_args(argv)
    result = evaluate(args)
    markdown, data = write_report([result], args.out)
    print(format_report([result]))
    print(f"wrote {markdown} and {data}")
    return 0
