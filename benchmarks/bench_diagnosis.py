"""Scale diagnosis of a fresh SmolTolk-150M on the embedded backbone (issue 11, item 1).

Builds a fresh SmolTolk-150M with `SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500)` (its
`pooling_norm` from `--pooling-norm`: default what new models get, `none` for the authors' architecture) and a
`baseline-135m`-style model (no adapters, no pooling, no residual) from the same embedded SmolLM2-135M-Instruct, runs
text, speech and interleaved inputs through them and prints, per input:

- the RMS of the joint embedding z and of every backbone layer output c^(l) (the last one after the final norm, as
  the model pools it), with the largest |activation| and its channel (massive activations);
- the RMS of the static pooling c', of the selector logits S(c') (and their spread across layers), the max/mean of
  omega = softmax(S(c')) and the histogram of its argmax layer;
- the RMS of the pooled state + residual, of the output adapter output and of the speech logits; the speech
  cross-entropy (vs ln 501) and the entropy of the speech softmax;
- with --forced-layers: the speech cross-entropy when omega is forced one-hot on each layer l (what the selector
  would reach by putting all weight on l).

Everything is read with forward hooks on the model's own modules; nothing of the forward is re-implemented.
Speech inputs use the demo's tokenised corpus (outputs/demo/heldout_units, `datasets.save_to_disk`) when present,
else random units; the script prints which. Deterministic (seeded), CPU, float32; about 2-3 minutes on 2 idle
cores (longer when they are shared).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter

import torch

from smoltolk_hf import SmolTolkForCausalLM
from smoltolk_hf.backbones import load_embedded_backbone
from smoltolk_hf.configuration_smoltolk import NEW_MODEL_POOLING_NORM, POOLING_NORMS

FORCED_LAYERS = (1, 2, 3, 9, 15, 20, 24, 29, 30)
FORCED_UTTERANCES = 2
BASELINE_SWITCHES = {
    "num_input_adapter_layers": 0,
    "num_output_adapter_layers": 0,
    "use_layer_pooling": False,
    "use_dynamic_pooling": False,
    "use_speech_residual": False,
}


def rms(x: torch.Tensor) -> float:
    """Root mean square over all given entries."""
    return x.float().pow(2).mean().sqrt().item() if x.numel() else float("nan")


def per_pos_rms(x: torch.Tensor) -> torch.Tensor:
    """RMS over the hidden dimension at each position: (n, d) -> (n,)."""
    return x.float().pow(2).mean(-1).sqrt()


# ---------------------------------------------------------------------------------------------------------- inputs


def load_units(root: str, n: int, seed: int) -> tuple[list[dict], str]:
    path = os.path.join(root, "outputs", "demo", "heldout_units")
    try:
        from datasets import load_from_disk

        ds = load_from_disk(path)
        rows = [ds[i] for i in range(min(n, len(ds)))]
        return rows, f"demo held-out corpus ({path}, {len(rows)} utterances)"
    except Exception as err:  # noqa: BLE001 - any failure: fall back to random units
        g = torch.Generator().manual_seed(seed)
        rows = [
            {"units": torch.randint(0, 500, (150,), generator=g).tolist(), "text": None, "words": None}
            for _ in range(n)
        ]
        return rows, f"random units (demo corpus not loadable: {type(err).__name__})"


def word_unit_spans(row: dict) -> list[tuple[int, int]] | None:
    """Unit index range of each word, from word end times and run-length durations (None if not available)."""
    if not row.get("words") or not row.get("word_end_times") or not row.get("durations"):
        return None
    ends_frames, t = [], 0
    for d in row["durations"]:
        t += d
        ends_frames.append(t)
    spans, start = [], 0
    for end_time in row["word_end_times"]:
        end_frame = end_time * row["frame_rate"]
        stop = start
        while stop < len(ends_frames) and ends_frames[stop] <= end_frame + 1e-6:
            stop += 1
        spans.append((start, stop))
        start = stop
    return spans


def build_inputs(tok, cfg, rows, seed: int) -> dict[str, list[torch.Tensor]]:
    off = cfg.speech_token_offset
    t_mark, s_mark = cfg.text_marker_id, cfg.speech_marker_id
    g = torch.Generator().manual_seed(seed)
    texts = [r["text"] for r in rows if r.get("text")] or [
        "The cat sat on the mat. It was a sunny day and the children played outside.",
        "Once upon a time there was a small village by the sea. The fishermen went out every morning.",
    ]
    inputs: dict[str, list[torch.Tensor]] = {"text": [], "speech": [], "interleaved": [], "random_units": []}
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        inputs["text"].append(torch.tensor([t_mark] + ids))
    for r in rows:
        units = [u + off for u in r["units"][:200]]
        inputs["speech"].append(torch.tensor([s_mark] + units + [cfg.speech_eos_id]))
        # random units after a text prefix (the "11.2 on random units after a text prefix")
        prefix = tok(r.get("text") or texts[0], add_special_tokens=False)["input_ids"][:24]
        rnd = (torch.randint(0, 500, (120,), generator=g) + off).tolist()
        inputs["random_units"].append(torch.tensor([t_mark] + prefix + [s_mark] + rnd))
        # interleaved: word groups of 3, alternating text / speech (speech from the word-aligned units)
        spans = word_unit_spans(r)
        if spans is None:
            continue
        ids, speech = [], False
        for k in range(0, len(r["words"]), 3):
            words = r["words"][k : k + 3]
            if speech:
                a, b = spans[k][0], spans[min(k + 3, len(spans)) - 1][1]
                if b <= a:
                    continue
                ids += [s_mark] + [u + off for u in r["units"][a:b]]
            else:
                ids += [t_mark] + tok(" " + " ".join(words), add_special_tokens=False)["input_ids"]
            speech = not speech
        inputs["interleaved"].append(torch.tensor(ids))
    return {k: v for k, v in inputs.items() if v}


# ---------------------------------------------------------------------------------------------------------- probes


class Probe:
    """Forward hooks on the model's own modules; records the tensors of one forward pass."""

    def __init__(self, model: SmolTolkForCausalLM):
        m = model.model
        self.rec: dict[str, torch.Tensor] = {}
        self.handles = []
        self.forced_layer: int | None = None
        for i, layer in enumerate(m.layers[: model.config.num_hidden_layers]):
            self.handles.append(layer.register_forward_hook(self._save(f"layer{i}")))
        self.handles.append(m.norm.register_forward_hook(self._save("norm")))
        self.handles.append(m.input_adapter.register_forward_hook(self._save("input_adapter")))
        if m.layer_pooling is not None:
            self.handles.append(m.layer_pooling.register_forward_hook(self._pool_hook))
            if m.layer_pooling.selector is not None:
                sel = m.layer_pooling.selector
                self.handles.append(sel.register_forward_hook(self._selector_hook))
        if len(m.output_adapter):
            self.handles.append(m.output_adapter[0].register_forward_pre_hook(self._adapter_in_hook))

    def _save(self, name):
        def hook(_mod, _args, out):
            self.rec[name] = (out[0] if isinstance(out, tuple) else out).detach()

        return hook

    def _selector_hook(self, _mod, args, out):
        self.rec["c_prime"] = args[0].detach()  # the selector's input is c'
        self.rec["S"] = out.detach()

    def _pool_hook(self, _mod, args, out):
        pooled, omega = out
        self.rec["pooled"] = pooled.detach()
        if "c_prime" not in self.rec:  # static pooling only: the output is c'
            self.rec["c_prime"] = pooled.detach()
        if self.forced_layer is not None:  # one-hot omega on one layer: replace c-bar by c^(l)
            return args[0][self.forced_layer], omega
        return None

    def _adapter_in_hook(self, _mod, args, kwargs=None):
        self.rec["adapter_in"] = args[0].detach()

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def run_one(model, probe: Probe, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    probe.rec = {}
    out = model.model(ids[None])
    rec = dict(probe.rec)
    rec["speech_state"] = out.speech_hidden_state.detach()
    rec["omega"] = out.layer_weights
    rec["z"] = model.model.embed(ids[None]).detach()
    return rec


def speech_head_stats(model, rec, ids) -> dict[str, torch.Tensor]:
    """Speech logits (units + eos, as the loss scores them) at positions whose next token is a speech unit/eos."""
    cfg = model.config
    nxt = ids[1:]
    pos = (nxt >= cfg.speech_token_offset) & (nxt < cfg.speech_pad_id)
    state = rec["speech_state"][0, :-1][pos]
    logits = model.speech_logits(state).float()[:, : cfg.speech_pad_id - cfg.speech_token_offset]
    target = nxt[pos] - cfg.speech_token_offset
    logp = logits.log_softmax(-1)
    ce = -logp.gather(-1, target[:, None])[:, 0]
    ent = -(logp.exp() * logp).sum(-1)
    first = pos.nonzero()[:, 0] == 0  # the prediction made at position 0 (the attention-sink position)
    return {"logits": logits, "ce": ce, "entropy": ent, "pos": pos, "first": first}


# ---------------------------------------------------------------------------------------------------------- report


def fmt(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def analyse(model, name: str, inputs: dict[str, list[torch.Tensor]], forced: bool) -> None:
    cfg = model.config
    L = cfg.num_hidden_layers
    probe = Probe(model)
    print(f"\n## {name}\n")
    results = {}
    for kind, seqs in inputs.items():
        acc: dict[str, list[torch.Tensor]] = {}
        omega_all, ce_all, ent_all, logit_all, first_ce, first_rms, massive = [], [], [], [], [], [], []
        for ids in seqs:
            rec = run_one(model, probe, ids)
            nxt_speech = torch.zeros_like(ids, dtype=torch.bool)
            nxt_speech[:-1] = (ids[1:] >= cfg.speech_token_offset) & (ids[1:] < cfg.speech_pad_id)
            # positions the statistics use: text inputs -> all but the first (position 0 is an attention sink);
            # otherwise the positions that predict a speech token (where pooling and the speech head matter)
            sel = nxt_speech if nxt_speech.any() else torch.arange(len(ids)) > 0
            sel = sel & (torch.arange(len(ids)) > 0)
            states = {f"c{l + 1}": rec[f"layer{l}"][0] for l in range(L)}
            states[f"c{L}"] = rec["norm"][0]  # pooled entry L is post-final-norm
            states[f"c{L}_prenorm"] = rec[f"layer{L - 1}"][0]
            states["z"] = rec["z"][0]
            states["adapter_in_out"] = rec["input_adapter"][0]
            states["pos0_c_mid"] = rec[f"layer{L // 2}"][0][:1]
            for key in ("c_prime", "S", "pooled", "adapter_in", "speech_state"):
                if key in rec:
                    states[key] = rec[key][0]
            for key, val in states.items():
                acc.setdefault(key, []).append(val if key.startswith("pos0") else val[sel])
            if rec["omega"] is not None:
                omega_all.append(rec["omega"][0][sel].float())
            hs = speech_head_stats(model, rec, ids)
            if hs["ce"].numel():
                keep = ~hs["first"]
                ce_all.append(hs["ce"][keep])
                ent_all.append(hs["entropy"][keep])
                logit_all.append(hs["logits"][keep])
                if hs["first"].any():
                    first_ce.append(hs["ce"][hs["first"]])
                    first_rms.append(rms(hs["logits"][hs["first"]]))
            big = torch.stack([per_pos_rms(rec[f"layer{l}"][0]) for l in range(L - 1)]).max(0).values
            massive.append(big[sel] > 50)
        cat = {k: torch.cat(v) for k, v in acc.items()}
        cat["massive"] = torch.cat(massive).float()
        if first_ce:
            cat["first_ce"] = torch.cat(first_ce)
            cat["first_logit_rms"] = torch.tensor(first_rms)
        results[kind] = (cat, omega_all, ce_all, ent_all, logit_all)

    kinds = list(results)
    print("Per-layer RMS over the selected positions (first position excluded), and max |activation| (channel):\n")
    print("| entry | " + " | ".join(f"{k} RMS | {k} max abs (ch)" for k in kinds) + " |")
    print("|---|" + "---|---|" * len(kinds))
    rows = ["z", "adapter_in_out"] + [f"c{l}" for l in range(1, L + 1)] + [f"c{L}_prenorm"]
    for key in rows:
        cells = []
        for kind in kinds:
            x = results[kind][0][key]
            flat = x.abs().max(0).values
            ch = int(flat.argmax())
            cells += [fmt(rms(x)), f"{fmt(flat.max().item())} ({ch})"]
        label = (
            "z (embedding)"
            if key == "z"
            else "input adapter output"
            if key == "adapter_in_out"
            else (f"{key} (post-norm)" if key == f"c{L}" else key)
        )
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
    for kind in kinds:
        x = results[kind][0]["pos0_c_mid"]
        print(f"- {kind}: RMS of c^({L // 2 + 1}) at position 0 (attention sink, excluded above): {fmt(rms(x))}")

    print("\nSpeech path (selected positions):\n")
    print("| quantity | " + " | ".join(kinds) + " |")
    print("|---|" + "---|" * len(kinds))

    def row(label, fn):
        vals = []
        for kind in kinds:
            try:
                vals.append(fn(*results[kind]))
            except (KeyError, IndexError, RuntimeError, ValueError):
                vals.append("n/a")
        print(f"| {label} | " + " | ".join(vals) + " |")

    row("n positions", lambda c, *_: str(c["z"].shape[0]))
    row(
        "share of positions with a massive state (some c^(l<L) with RMS > 50)",
        lambda c, *_: fmt(c["massive"].mean().item()),
    )
    row("RMS c' (static pooling)", lambda c, *_: fmt(rms(c["c_prime"])))
    row("RMS S(c') (selector logits)", lambda c, *_: fmt(rms(c["S"])))
    row("std of S(c') across layers (mean over positions)", lambda c, *_: fmt(c["S"].float().std(-1).mean().item()))
    row(
        "max - min of S(c') (mean over positions)",
        lambda c, *_: fmt((c["S"].max(-1).values - c["S"].min(-1).values).mean().item()),
    )
    row("mean of max omega", lambda c, o, *_: fmt(torch.cat(o).max(-1).values.mean().item()))
    row(f"mean omega per layer (1/L = {1 / L:.3f})", lambda c, o, *_: fmt(torch.cat(o).mean().item()))
    row(
        "omega entropy / ln L",
        lambda c, o, *_: fmt(
            (-(torch.cat(o) * torch.cat(o).clamp_min(1e-30).log()).sum(-1).mean() / math.log(L)).item()
        ),
    )

    def hist(c, o, *_):
        arg = torch.cat(o).argmax(-1) + 1
        cnt = Counter(arg.tolist())
        n = arg.numel()
        return ", ".join(f"l{l}: {100 * k / n:.0f}%" for l, k in cnt.most_common(4))

    row("argmax layer of omega (top 4)", hist)
    row("mean omega on layer L (post-norm)", lambda c, o, *_: fmt(torch.cat(o)[:, -1].mean().item()))
    row("RMS pooled c-bar", lambda c, *_: fmt(rms(c["pooled"])))
    row("RMS pooled + residual (output adapter input)", lambda c, *_: fmt(rms(c["adapter_in"])))
    row("RMS speech state (output adapter output)", lambda c, *_: fmt(rms(c["speech_state"])))
    row("RMS speech logits", lambda c, o, ce, ent, lg: fmt(rms(torch.cat(lg))))
    row(
        "std of speech logits across the vocabulary", lambda c, o, ce, ent, lg: fmt(torch.cat(lg).std(-1).mean().item())
    )
    row(f"speech CE (ln 501 = {math.log(501):.2f})", lambda c, o, ce, *_: fmt(torch.cat(ce).mean().item()))
    row("speech softmax entropy (max ln 501)", lambda c, o, ce, ent, lg: fmt(torch.cat(ent).mean().item()))
    row("speech CE of the prediction at position 0 (when speech)", lambda c, *_: fmt(c["first_ce"].mean().item()))
    row("RMS of the speech logits at position 0", lambda c, *_: fmt(c["first_logit_rms"].mean().item()))
    row("n speech targets (position 0 excluded)", lambda c, o, ce, *_: str(torch.cat(ce).numel()))

    if forced and model.model.layer_pooling is not None:
        print(
            "\nSpeech CE with omega forced one-hot on layer l (c-bar = c^(l)), position 0 excluded, "
            f"first {FORCED_UTTERANCES} utterances:\n"
        )
        fk = [k for k in ("speech", "random_units") if k in kinds]
        print("| l | " + " | ".join(f"{k} CE | {k} RMS c^(l)+z | {k} RMS speech state" for k in fk) + " |")
        print("|---|" + "---|---|---|" * len(fk))
        for l in FORCED_LAYERS:
            l -= 1
            probe.forced_layer = l
            cells = []
            for kind in fk:
                ces, ain, sst = [], [], []
                for ids in inputs[kind][:FORCED_UTTERANCES]:
                    rec = run_one(model, probe, ids)
                    hs = speech_head_stats(model, rec, ids)
                    pos = torch.zeros_like(ids, dtype=torch.bool)
                    pos[:-1] = hs["pos"]
                    pos[0] = False
                    ces.append(hs["ce"][~hs["first"]])
                    ain.append(rec["adapter_in"][0][pos])
                    sst.append(rec["speech_state"][0][pos])
                cells += [fmt(torch.cat(ces).mean().item()), fmt(rms(torch.cat(ain))), fmt(rms(torch.cat(sst)))]
            print(f"| {l + 1}{' (post-norm)' if l == L - 1 else ''} | " + " | ".join(cells) + " |")
        probe.forced_layer = None
    probe.remove()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Prints markdown tables: per-layer RMS and max |activation| of z and c^(1..L) on text, speech, "
            "random-units-after-text and interleaved inputs; RMS of c', S(c'), omega statistics and argmax-layer "
            "histogram; RMS of pooled+residual, output adapter output, speech logits; speech CE vs ln 501 and "
            "speech softmax entropy; the same for a baseline-135m-style model; with --forced-layers, the speech CE "
            "with omega forced onto each layer. Deterministic (--seed)."
        ),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--utterances", type=int, default=6, help="speech/interleaved utterances (default 6)")
    parser.add_argument(
        "--forced-layers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the CE with omega forced one-hot on each layer (default on)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pooling-norm",
        choices=POOLING_NORMS,
        default=NEW_MODEL_POOLING_NORM,
        help="SmolTolk's pooling_norm (default: what from_text_model gives; 'none': the authors' architecture)",
    )
    parser.add_argument(
        "--baseline", action=argparse.BooleanOptionalAction, default=True, help="also measure the baseline"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    backbone, tok = load_embedded_backbone()
    backbone.float().eval()
    torch.manual_seed(args.seed)
    model = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500, pooling_norm=args.pooling_norm).eval()
    torch.manual_seed(args.seed)
    baseline = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500, **BASELINE_SWITCHES).eval()

    rows, source = load_units(root, args.utterances, args.seed)
    inputs = build_inputs(tok, model.config, rows, args.seed)
    cfg = model.config
    print(f"# SmolTolk scale diagnosis (python benchmarks/bench_diagnosis.py {' '.join(sys.argv[1:])})\n")
    print(
        f"- backbone: embedded SmolLM2-135M-Instruct, L = {cfg.num_hidden_layers}, d = {cfg.hidden_size}, "
        f"initializer_range = {cfg.initializer_range}, rms_norm_eps = {cfg.rms_norm_eps}, torch {torch.__version__}"
    )
    print(f"- speech units: {source}; seed {args.seed}")
    print("- inputs: " + "; ".join(f"{k}: {len(v)} seqs, {sum(len(s) for s in v)} tokens" for k, v in inputs.items()))
    w = model.model.speech_embed_tokens.weight
    print(
        f"- speech table RMS {fmt(rms(w))} (text table RMS {fmt(rms(model.model.embed_tokens.weight))}); "
        f"final-norm weight RMS {fmt(rms(model.model.norm.weight))}; "
        f"selector weight RMS {fmt(rms(model.model.layer_pooling.selector.weight))}; "
        f"phi = softmax(static) max {fmt(model.model.layer_pooling.static_weights.softmax(-1).max().item())}"
    )
    with torch.no_grad():  # check: the fresh model reproduces the text LM on text
        ids = inputs["text"][0][1:][None]
        diff = (model(ids).logits[..., : cfg.vocab_size] - backbone(ids).logits).abs().max().item()
    print(f"- fresh SmolTolk vs backbone text logits, max |diff| on text: {diff:.2e}")

    name = f"SmolTolk-150M (from_text_model, pooling_norm={args.pooling_norm!r})"
    analyse(model, name, inputs, args.forced_layers)
    if args.baseline:
        name = "baseline-135m-style (from_text_model with all adapters/pooling/residual off)"
        analyse(baseline, name, inputs, False)
    print(f"\n(total {time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
