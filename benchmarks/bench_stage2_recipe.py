"""Does stage 2 keep the text LM at a small batch? The paper's rate vs the square-root rule (issue 11, item 3).

Trains a fresh SmolTolk-150M (`from_text_model` on the embedded SmolLM2-135M-Instruct, through `build_trainer` and
the package's `SmolTolkTrainer`) for `--steps` stage-2 steps (everything trainable, the full mixture of the demo
corpus: speech, interleaved and fortune text) with one of two recipes, and scores the held-out text check
(`smoltolk_hf.demo.text_check`: 42 stories with a right and a wrong ending, none of them training text) before and
after, with the held-out speech loss of the demo's held-out utterances:

- `paper`: every group at the base rate 3e-4 from the first stage-2 step (`backbone_factor: 1`, no warm-up), the
  paper's recipe, made for 1M-token batches;
- `sqrt`: the package's default for small batches: the backbone at `sqrt(tokens per step / 1M)` x the base rate
  (`backbone_factor` left unset) and a linear warm-up over the first quarter of the steps (`stage2_warmup_steps`).

Run one recipe per process (`--recipe`), e.g. both side by side. CPU, float32; writes under outputs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import datasets
import numpy as np
import torch

from smoltolk_hf.data.samples import SpeechSampleBuilder
from smoltolk_hf.demo.text_check import text_check
from smoltolk_hf.training import build_trainer


def recipe_stages(recipe: str, steps: int) -> dict:
    if recipe == "paper":
        return {"stage1_steps": 0, "warmup_steps": 0, "backbone_factor": 1.0, "stage2_warmup_steps": 0}
    return {"stage1_steps": 0, "warmup_steps": 0, "stage2_warmup_steps": max(1, steps // 4)}


@torch.no_grad()
def heldout_speech_loss(model, rows: torch.Tensor) -> float:
    model.eval()
    return float(model(rows, labels=rows).speech_loss)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=("paper", "sqrt"), required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--corpus", default="outputs/demo", help="the demo's output folder (`smoltolk demo`)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--before",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the fresh model (equal to the backbone on text; --no-before saves that time)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = os.path.join(root, "outputs", f"stage2_{args.recipe}")
    t0 = time.time()
    config = {
        "model": {"from_text_model": "embedded", "num_speech_units": 500, "attn_implementation": "sdpa"},
        "data": {
            "context_length": args.context,
            "seed": 0,
            "interleaved": [{"path": os.path.join(args.corpus, "units")}],
            "speech": [{"path": os.path.join(args.corpus, "units")}],
            "text": [{"path": os.path.join(args.corpus, "text")}],
        },
        "stages": recipe_stages(args.recipe, args.steps),
        "training": {
            "output_dir": out_dir,
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch,
            "logging_steps": 1,
            "save_strategy": "no",
            "seed": 0,
            "disable_tqdm": True,
        },
    }
    trainer = build_trainer(config)
    model, processor = trainer.model, trainer.processing_class
    heldout = SpeechSampleBuilder(
        datasets.load_from_disk(os.path.join(args.corpus, "heldout_units")), model.config, args.context
    )
    rows = torch.stack([heldout.build(np.random.default_rng([0, i]))["input_ids"] for i in range(4)])
    nan = float("nan")
    before = {"accuracy": nan, "mean_margin": nan, "ending_nll": nan, "speech_loss": heldout_speech_loss(model, rows)}
    if args.before:
        before.update(text_check(model, processor))
    print(f"before: {json.dumps(before)}", flush=True)
    trainer.train()
    after = {**text_check(model, processor), "speech_loss": heldout_speech_loss(model, rows)}
    lrs = {k: v for k, v in trainer.state.log_history[-2].items() if k.startswith("learning_rate")}
    print(f"after:  {json.dumps(after)}")
    print(f"last learning rates: {lrs}; backbone_factor {trainer.schedule.backbone_factor:.4g}")
    print(
        f"| {args.recipe} | {args.steps} x {args.batch} x {args.context} | {before['accuracy']:.3f} -> "
        f"{after['accuracy']:.3f} | {before['mean_margin']:.3f} -> {after['mean_margin']:.3f} | "
        f"{before['ending_nll']:.3f} -> {after['ending_nll']:.3f} | {before['speech_loss']:.2f} -> "
        f"{after['speech_loss']:.2f} |"
    )
    print(f"(python benchmarks/bench_stage2_recipe.py {' '.join(sys.argv[1:])}: {time.time() - t0:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
