"""Why does the speech loss barely move, or blow up, on small batches? Short runs on the demo corpus (issue 11 item 5).

Trains a fresh SmolTolk-150M (the demo's training config, `demo.training.training_config`: `from_text_model` on the
embedded SmolLM2-135M-Instruct, through `build_trainer` and `SmolTolkTrainer`) for `--steps` steps on the demo
corpus with the given stage settings, and prints per step the training speech loss and the size of each
speech-specific module's update (RMS of the weight change over RMS of the weights, and the RMS change itself), then
the held-out speech NLL (`evaluation.nll.speech_nll`, packed, as the demo measures it) beside the unigram entropy of
the training units.

    python benchmarks/bench_speech_rate.py --steps 10 --stage1-steps 10 --peak-factor 10    # the paper's stage 1
    python benchmarks/bench_speech_rate.py --steps 10 --stage1-steps 10 --peak-factor 1

Any `stages:` field can be set with `--stages KEY=VALUE` (repeatable), any model field with `--override KEY=VALUE`
(e.g. `speech_embedding_scale=1.0`, the lookups' scale before it became 10). CPU, float32; writes under outputs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import datasets
import torch
from transformers import TrainerCallback

from smoltolk_hf.demo.metrics import unigram_cross_entropy
from smoltolk_hf.demo.training import training_config
from smoltolk_hf.evaluation.nll import speech_nll
from smoltolk_hf.training import build_trainer
from smoltolk_hf.training.config import parse_assignment

MODULES = (
    "model.speech_embed_tokens",
    "model.marker_embed",
    "model.input_adapter",
    "model.output_adapter",
    "model.layer_pooling",
)


class UpdateSizes(TrainerCallback):
    """Records, per optimizer step, RMS(delta W) / RMS(W) and RMS(delta W) of each module in `MODULES`."""

    def __init__(self, model):
        self.params = {m: [p for n, p in model.named_parameters() if n.startswith(m + ".")] for m in MODULES}
        self.before = None
        self.steps: list[dict] = []

    def _snapshot(self):
        return {m: torch.cat([p.detach().flatten() for p in ps]).clone() for m, ps in self.params.items() if ps}

    def on_step_begin(self, args, state, control, **kwargs):
        self.before = self._snapshot()

    def on_step_end(self, args, state, control, **kwargs):
        after = self._snapshot()
        self.steps.append(
            {
                m.split(".")[-1]: (
                    float((after[m] - self.before[m]).pow(2).mean().sqrt() / self.before[m].pow(2).mean().sqrt()),
                    float((after[m] - self.before[m]).pow(2).mean().sqrt()),
                )
                for m in after
            }
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--stage1-steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--peak-factor", type=float, help="default: unset, the batch rule (docs/training.md)")
    parser.add_argument("--stages", action="append", default=[], help="KEY=VALUE for any other stages: field")
    parser.add_argument("--override", action="append", default=[], help="KEY=VALUE for model.overrides (config)")
    parser.add_argument("--lr", type=float, default=3e-4, help="base learning rate")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--corpus", default="outputs/demo", help="the demo's output folder (`smoltolk demo`)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--speech-table-std", type=float, help="re-initialise the (tied) speech table with this std (diagnosis only)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    t0 = time.time()
    stages = {"stage1_steps": args.stage1_steps, "warmup_steps": args.warmup_steps}
    if args.peak_factor is not None:
        stages["peak_factor"] = args.peak_factor
    stages.update(parse_assignment(item) for item in args.stages)
    corpus = {name: os.path.join(args.corpus, name) for name in ("units", "text", "speech_tokenizer")}
    output_dir = os.path.join(root, "outputs", "speech_rate")
    config = training_config(corpus, output_dir, args.context, args.batch, args.stage1_steps, 0)
    config["stages"] = stages
    config["model"]["overrides"] = dict(parse_assignment(item) for item in args.override)
    config["training"].update(
        max_steps=args.steps,
        learning_rate=args.lr,
        gradient_accumulation_steps=args.accumulation,
        disable_tqdm=True,
    )
    trainer = build_trainer(config)
    model, processor = trainer.model, trainer.processing_class
    if args.speech_table_std is not None:
        torch.nn.init.normal_(model.model.speech_embed_tokens.weight, std=args.speech_table_std)
    sizes = UpdateSizes(model)
    trainer.add_callback(sizes)
    heldout = datasets.load_from_disk(os.path.join(args.corpus, "heldout_units"))["units"]
    unigram = unigram_cross_entropy(
        datasets.load_from_disk(os.path.join(args.corpus, "units"))["units"], heldout, 500
    )
    before = speech_nll(model.eval(), processor, heldout, max_length=args.context, mode="packed")["nll"]
    trainer.train()
    after = speech_nll(model.eval(), processor, heldout, max_length=args.context, mode="packed")["nll"]
    logs = [e for e in trainer.state.log_history if "speech_loss" in e]
    print("| step | stage | lr speech | speech loss | " + " | ".join(sizes.steps[0]) + " |")
    for entry, size in zip(logs, sizes.steps):
        cells = " | ".join(f"{rel:.1e} ({abs_:.1e})" for rel, abs_ in size.values())
        print(
            f"| {entry['step']} | {entry['stage']} | {entry['learning_rate_speech']:.2e} | "
            f"{entry['speech_loss']:.3f} | {cells} |"
        )
    result = {"before": before, "after": after, "unigram": unigram, "stages": stages, "args": vars(args)}
    print(json.dumps(result))
    print(
        f"held-out speech NLL {before:.3f} -> {after:.3f} (unigram {unigram:.3f}); "
        f"python benchmarks/bench_speech_rate.py {' '.join(sys.argv[1:])}: {time.time() - t0:.0f} s, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
