"""SmolTolk-150M vs baseline-135m from the embedded SmolLM2-135M, trained side by side (issue 11 item 4).

Both models start from the same backbone (`from_text_model: embedded` with the `smoltolk-150m` and the
`baseline-135m` preset: the baseline is plain vocabulary expansion, without adapters, layer pooling or residual),
and train for the same steps on the same data: the demo's synthetic spoken corpus scaled up (espeak-ng speech of
Debian fortunes, 500 MFCC units), stage 1 then stage 2 with the demo's training settings. The script reports, per
model, before and after training:

- held-out speech NLL (the training loss on held-out utterances, packed windows) beside the unigram entropy of the
  training units (add-one smoothed, on the held-out units);
- SmolTolk's selector on held-out speech (mean max layer weight, entropy, where the weight sits);
- the held-out text check (42 stories with a right and a wrong ending, none in any training text);

and after training the spoken cloze set of the demo in the four settings (S, T, T->S, S->T) and, for SmolTolk, word
segmentation from omega^(L) (P/R/F1/R-value) beside random boundaries as many as its peaks. It writes
`results.json`, `results.md` (the tables), `loss_curves.png` (training speech and text loss of both models) and
`smoltolk-150m/selector_weights.png` (Figure 5) under `--out-dir`.

    PYTHONPATH=src python examples/experiment_smoltolk_vs_baseline.py                             # the default
    PYTHONPATH=src python examples/experiment_smoltolk_vs_baseline.py --steps 60 --stage1-steps 40  # a short run

The default run (320 steps) took 18.3 minutes on 2 shared CPU cores; it is a plain script, not a
test. Results of a run are recorded in docs/experiment.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import datasets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from smoltolk_hf.demo.evaluation import run_demo_evaluation
from smoltolk_hf.demo.metrics import format_selector_state, unigram_cross_entropy
from smoltolk_hf.demo.training import NUM_UNITS, measure, prepare_data, report, training_config
from smoltolk_hf.training import build_trainer

MODELS = ("smoltolk-150m", "baseline-135m")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--utterances", type=int, default=200, help="synthetic utterances in all")
    parser.add_argument("--heldout", type=int, default=16, help="of which held out (NLL, selector, cloze)")
    # The demo's training length: both models train and evaluate in about 18 minutes on 2 shared cores.
    parser.add_argument("--steps", type=int, default=320, help="training steps in all (stage 1 + stage 2)")
    parser.add_argument("--stage1-steps", type=int, default=300)
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--cloze-pairs", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="outputs/experiment")
    args = parser.parse_args()
    if not 0 < args.stage1_steps < args.steps:
        parser.error(f"--stage1-steps must be in [1, --steps), got {args.stage1_steps} with --steps {args.steps}")
    if not 2 <= args.heldout < args.utterances:
        parser.error(f"--heldout must be in [2, --utterances), got {args.heldout}")
    return args


def train_and_evaluate(
    name: str, args: argparse.Namespace, data: dict, heldout, unigram: float, text_before: dict | None
) -> dict:
    """Builds `name` from the embedded backbone, measures it, trains it and measures and evaluates it again.
    `text_before`: the text check of a fresh model, when already measured (the text path of a fresh SmolTolk and of
    a fresh baseline is the same backbone with the same RoPE base, so one measurement serves both)."""
    out_dir = os.path.join(args.out_dir, name)
    config = training_config(
        data,
        os.path.join(out_dir, "run"),
        args.context_length,
        args.batch_size,
        args.stage1_steps,
        args.steps - args.stage1_steps,
        args.seed,
        preset=name,
    )
    trainer = build_trainer(config)
    model, processor = trainer.model, trainer.processing_class
    print(f"\n== {name}: before training", flush=True)
    before = measure(model, processor, heldout["units"], args.context_length, text=text_before)
    report(f"{name} before training", before, unigram)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    print(f"\n== {name}: after training ({train_seconds:.0f} s)", flush=True)
    after = measure(model, processor, heldout["units"], args.context_length)
    report(f"{name} after training", after, unigram)
    evaluation = run_demo_evaluation(model, processor, heldout, out_dir, max_pairs=args.cloze_pairs)
    # A log entry has a modality's loss only when its interval had targets of that modality.
    log = [
        {"step": e["step"], "text_loss": e.get("text_loss"), "speech_loss": e.get("speech_loss")}
        for e in trainer.state.log_history
        if "loss" in e and "step" in e
    ]
    return {"before": before, "after": after, "evaluation": evaluation, "log": log, "train_seconds": train_seconds}


def plot_losses(results: dict, path: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, result in results.items():
        for axis, key in zip(axes, ("speech_loss", "text_loss")):
            points = [(e["step"], e[key]) for e in result["log"] if e[key] is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=2, label=name)
    for axis, title in zip(axes, ("training speech loss", "training text loss")):
        axis.set_xlabel("step")
        axis.set_ylabel("nats per token")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].axhline(results[MODELS[0]]["unigram_entropy"], color="gray", linestyle="--", label="unigram entropy")
    axes[0].legend()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def markdown(results: dict, args: argparse.Namespace) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    unigram = results[MODELS[0]]["unigram_entropy"]
    lines = [
        (
            f"Run: {args.utterances} utterances ({args.heldout} held out), {args.steps} steps ({args.stage1_steps} "
            f"in stage 1), context {args.context_length}, batch {args.batch_size}, seed {args.seed}. Unigram entropy "
            f"of the training units on the held-out ones: **{unigram:.3f}** nats per unit."
        ),
        "",
        (
            "| model | held-out speech NLL before | after | text check before | after | ending NLL before | after "
            "| S | T | T->S | S->T | train s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        r = results[name]
        b, a, acc = r["before"], r["after"], r["evaluation"]["accuracy"]
        lines.append(
            f"| {name} | {b['speech_nll']:.3f} | {a['speech_nll']:.3f} | {pct(b['text_check']['accuracy'])} | "
            f"{pct(a['text_check']['accuracy'])} | {b['text_check']['ending_nll']:.3f} | "
            f"{a['text_check']['ending_nll']:.3f} | {pct(acc['S'])} | {pct(acc['T'])} | {pct(acc['T->S'])} | "
            f"{pct(acc['S->T'])} | {r['train_seconds']:.0f} |"
        )
    smoltolk = results[MODELS[0]]
    lines += ["", f"SmolTolk selector before: {format_selector_state(smoltolk['before']['selector'])}"]
    lines += [f"SmolTolk selector after: {format_selector_state(smoltolk['after']['selector'])}", ""]
    segmentation, random_peaks = smoltolk["evaluation"]["segmentation"], smoltolk["evaluation"]["random_peaks"]
    lines += ["| word segmentation (held out) | P | R | F1 | R-value |", "|---|---|---|---|---|"]
    for label, scores in (("SmolTolk omega^(L) peaks", segmentation), ("random, as many peaks", random_peaks)):
        lines.append(
            f"| {label} | {pct(scores['precision'])} | {pct(scores['recall'])} | {pct(scores['f1'])} | "
            f"{pct(scores['r_value'])} |"
        )
    lines.append(
        f"\n(peaks on each utterance's omega^(L) rescaled to [0, 1], prominence {segmentation['prominence']} tuned on "
        f"the R-value; {segmentation['num_utterances']} utterances, {random_peaks['num_peaks']} peaks, random: mean "
        f"of {random_peaks['draws']} draws)"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    load = os.getloadavg()
    data = prepare_data(os.path.join(args.out_dir, "data"), args.utterances, args.heldout, args.seed)
    heldout = datasets.load_from_disk(data["heldout_units"])
    unigram = unigram_cross_entropy(datasets.load_from_disk(data["units"])["units"], heldout["units"], NUM_UNITS)
    results: dict = {}
    for name in MODELS:
        text_before = results[MODELS[0]]["before"]["text_check"] if results else None
        results[name] = train_and_evaluate(name, args, data, heldout, unigram, text_before)
        results[name]["unigram_entropy"] = unigram
    figure = plot_losses(results, os.path.join(args.out_dir, "loss_curves.png"))
    table = markdown(results, args)
    wall = time.perf_counter() - start
    table += (
        f"\nWall time {wall / 60:.1f} min on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}),"
        f" load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}.\n"
    )
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump({"args": vars(args), "results": results, "wall_seconds": wall}, f, indent=1, default=float)
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(table)
    print("\n" + table + f"\nloss curves: {figure}\nFigure 5: {results[MODELS[0]]['evaluation']['figure']}")


if __name__ == "__main__":
    main()
