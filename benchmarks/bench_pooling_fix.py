"""Candidate fixes for the scale of SmolTolk's speech path, compared on the embedded backbone (issue 11, item 2).

For each candidate, a fresh SmolTolk-150M is built with `SmolTolkForCausalLM.from_text_model` from the embedded
SmolLM2-135M-Instruct (same seed, so the same speech-part init) and measured:

- at init: the speech cross-entropy on held-out speech rows of the demo corpus (`<|speech|>` + packed held-out
  utterances, as the demo scores them; with and without the prediction made at position 0, the attention-sink
  position) against ln 501, and the selector's mean max layer weight omega on those rows;
- after `--steps` stage-1 steps (backbone frozen, the speech parts and pooling trained with the package's optimizer
  groups and two-stage schedule: base rate 3e-4, speech peak 10x) on speech + interleaved samples of the demo's
  training units: the held-out speech NLL against the unigram entropy of the training units (add-one smoothed,
  evaluated on the same held-out targets), and the selector's mean max weight, entropy and favourite layers.

Candidates (the library's switch `pooling_norm` where it exists; the others are applied here by hooks or by
changing the fresh weights, so the library carries only what is kept):

| name | what |
|---|---|
| authors | `pooling_norm="none"`: the authors' architecture, raw layer outputs pooled |
| rmsnorm | `pooling_norm="rmsnorm"`: a fresh RMSNorm (weight 1) on each pooled layer output |
| final_norm | the backbone's final norm applied to every pooled entry (pre-hook on the pooling module) |
| head_norm | a fresh RMSNorm before the speech head (the speech state is normalised before the speech table) |
| zero_selector | selector weight and bias initialised to 0 (omega = phi-independent uniform at init) |
| scaled_table | speech table initialised at 1/8 of `initializer_range` |
| rmsnorm+zero_selector | both |

Needs the demo's tokenised corpus (`--corpus`, default: the outputs/demo of this tree or of the working directory).
CPU, float32, deterministic data order; about 2 minutes per candidate for 30 steps on 2 idle cores.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter

import datasets
import numpy as np
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from smoltolk_hf import SmolTolkForCausalLM
from smoltolk_hf.backbones import load_embedded_backbone
from smoltolk_hf.data.samples import InterleavedSampleBuilder, SpeechSampleBuilder
from smoltolk_hf.training.optim import TwoStageSchedule, parameter_groups, two_stage_scheduler

CANDIDATES = {
    "authors": ("none", ()),
    "rmsnorm": ("rmsnorm", ()),
    "final_norm": ("none", ("final_norm",)),
    "head_norm": ("none", ("head_norm",)),
    "zero_selector": ("none", ("zero_selector",)),
    "scaled_table": ("none", ("scaled_table",)),
    "rmsnorm+zero_selector": ("rmsnorm", ("zero_selector",)),
}
BASE_LR = 3e-4  # training.train.RECIPE


def build_candidate(backbone, name: str, seed: int) -> tuple[SmolTolkForCausalLM, list[torch.nn.Parameter]]:
    """A fresh SmolTolk-150M with the candidate applied; returns it and any extra trainable parameters."""
    pooling_norm, tweaks = CANDIDATES[name]
    torch.manual_seed(seed)
    model = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500, pooling_norm=pooling_norm)
    trunk, extra = model.model, []
    if "final_norm" in tweaks:
        norm = trunk.norm

        def normalise_entries(_module, args):
            states = args[0]
            return ([norm(state) for state in states[:-1]] + [states[-1]],)  # the last one is already normalised

        trunk.layer_pooling.register_forward_pre_hook(normalise_entries)
    if "head_norm" in tweaks:
        head_norm = LlamaRMSNorm(model.config.hidden_size, eps=model.config.rms_norm_eps)
        unnormalised = model.speech_logits
        model.speech_logits = lambda state: unnormalised(head_norm(state))
        extra = list(head_norm.parameters())
    with torch.no_grad():
        if "zero_selector" in tweaks:
            trunk.layer_pooling.selector.weight.zero_()
            trunk.layer_pooling.selector.bias.zero_()
        if "scaled_table" in tweaks:
            trunk.speech_embed_tokens.weight.mul_(1 / 8)
    return model, extra


@torch.no_grad()
def measure(model: SmolTolkForCausalLM, rows: torch.Tensor) -> dict[str, float]:
    """Speech CE (all targets, and without the position-0 prediction) and selector statistics on `rows`."""
    model.eval()
    cfg = model.config
    out = model(rows, labels=rows, output_layer_weights=True)
    first = model(rows[:, :2], labels=rows[:, :2])  # only the prediction made at position 0 (the sink)
    n, n_first = out.num_speech_targets, first.num_speech_targets
    ce_no_first = (out.speech_loss * n - first.speech_loss * n_first) / (n - n_first)
    result = {"ce": float(out.speech_loss), "ce_no_pos0": float(ce_no_first), "ce_pos0": float(first.speech_loss)}
    omega = out.layer_weights
    if omega is not None:
        nxt_speech = (rows[:, 1:] >= cfg.speech_token_offset) & (rows[:, 1:] < cfg.speech_pad_id)
        keep = torch.zeros_like(rows, dtype=torch.bool)
        keep[:, 1:-1] = nxt_speech[:, 1:]  # positions predicting speech, position 0 excluded
        w = omega[keep].float()
        result["max_omega"] = float(w.max(-1).values.mean())
        result["entropy"] = float((-(w * w.clamp_min(1e-30).log()).sum(-1)).mean() / math.log(cfg.num_hidden_layers))
        top = Counter((w.argmax(-1) + 1).tolist()).most_common(2)
        result["top_layers"] = ", ".join(f"l{layer} {100 * n / len(w):.0f}%" for layer, n in top)
        result["omega_last"] = float(w[:, -1].mean())
    return result


def unigram_entropy(train_units: datasets.Dataset, rows: torch.Tensor, cfg) -> float:
    """Cross-entropy of the add-one smoothed unigram of the training units (+ one speech end per utterance) on the
    speech targets of `rows` (what `speech_loss` scores)."""
    counts = np.ones(cfg.num_speech_units + 1)
    for units in train_units["units"]:
        np.add.at(counts, np.asarray(units), 1)
        counts[-1] += 1
    logp = np.log(counts / counts.sum())
    targets = rows[:, 1:]
    speech = (targets >= cfg.speech_token_offset) & (targets < cfg.speech_pad_id)
    return float(-logp[(targets[speech] - cfg.speech_token_offset).numpy()].mean())


def train(model, extra, builders, steps: int, seed: int) -> list[float]:
    """`steps` stage-1 steps (backbone frozen) on one speech + one interleaved sample each; the speech losses."""
    for name, param in model.named_parameters():
        if name.startswith(("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")):
            param.requires_grad_(False)
    groups = parameter_groups(model, weight_decay=0.1)
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0, "role": "speech", "name": "speech.head_norm"})
    for group in groups:
        group["params"] = [p for p in group["params"] if p.requires_grad]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=BASE_LR, betas=(0.9, 0.95))
    schedule = TwoStageSchedule(stage1_steps=steps, warmup_steps=max(1, steps // 4))
    scheduler = two_stage_scheduler(optimizer, schedule)
    rng = np.random.default_rng(seed)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    losses = []
    model.train()
    for _ in range(steps):
        batch = torch.stack([b.build(rng)["input_ids"] for b in builders])
        out = model(batch, labels=batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.speech_loss))
    return losses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=None, help="the demo's output folder (units, heldout_units)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--steps", type=int, default=30, help="stage-1 training steps per candidate (0: init only)")
    parser.add_argument("--context", type=int, default=128, help="context length of training and held-out rows")
    parser.add_argument("--eval-rows", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    corpus = args.corpus or next(
        (p for p in (os.path.join(root, "outputs", "demo"), "outputs/demo") if os.path.isdir(p)), None
    )
    if corpus is None:
        raise SystemExit("No demo corpus found: run `smoltolk demo` first or pass --corpus.")
    t0 = time.time()
    backbone, tokenizer = load_embedded_backbone()
    backbone.float().eval()
    train_units = datasets.load_from_disk(os.path.join(corpus, "units"))
    heldout_units = datasets.load_from_disk(os.path.join(corpus, "heldout_units"))

    print(f"# Pooling-fix candidates (python benchmarks/bench_pooling_fix.py {' '.join(sys.argv[1:])})\n")
    print(f"- corpus {corpus}: {len(train_units)} training, {len(heldout_units)} held-out utterances")
    print(f"- {args.steps} stage-1 steps of 1 speech + 1 interleaved sample of {args.context} ids, seed {args.seed}")
    load = os.getloadavg()
    print(f"- load average at start {load[0]:.2f}; ln 501 = {math.log(501):.3f}\n")
    rows_out = []
    for name in args.candidates:
        t1 = time.time()
        model, extra = build_candidate(backbone, name, args.seed)
        cfg = model.config
        heldout = SpeechSampleBuilder(heldout_units, cfg, args.context)
        rngs = [np.random.default_rng([args.seed, i]) for i in range(args.eval_rows)]
        rows = torch.stack([heldout.build(rng)["input_ids"] for rng in rngs])
        unigram = unigram_entropy(train_units, rows, cfg)
        init = measure(model, rows)
        builders = [
            SpeechSampleBuilder(train_units, cfg, args.context),
            InterleavedSampleBuilder(train_units, cfg, tokenizer, args.context),
        ]
        losses = train(model, extra, builders, args.steps, args.seed) if args.steps else []
        after = measure(model, rows) if args.steps else {}
        rows_out.append((name, init, after, unigram, losses, time.time() - t1))
        print(f"{name}: init {init} | after {after} | unigram {unigram:.3f} | {time.time() - t1:.0f} s", flush=True)
        del model, extra

    print("\n| candidate | fresh speech CE (pos 0 excl.) | fresh max omega | held-out NLL after "
          f"{args.steps} steps | unigram entropy | NLL - unigram | max omega after | omega entropy / ln L after "
          "| top layers after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, init, after, unigram, losses, _ in rows_out:
        nll = after.get("ce", float("nan"))
        print(
            f"| {name} | {init['ce']:.2f} ({init['ce_no_pos0']:.2f}) | {init.get('max_omega', float('nan')):.3f} "
            f"| {nll:.3f} | {unigram:.3f} | {nll - unigram:+.3f} | {after.get('max_omega', float('nan')):.3f} "
            f"| {after.get('entropy', float('nan')):.3f} | {after.get('top_layers', '')} |"
        )
    print(f"\n(total {time.time() - t0:.0f} s, load average at end {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
