"""Publish SmolTolk on the Hugging Face Hub: weights, processor, remote code and a generated model card.

    python examples/publish.py OUT_DIR --model DIR [--results results.json] [--base-model ID] [--push REPO_ID]
    python examples/publish.py OUT_DIR --tiny [--results results.json]     # builds a tiny model first (offline)

1. writes the Hub-ready folder (what `smoltolk export MODEL_DIR OUT_DIR` does);
2. checks it the way a Hub user will meet it: in a fresh Python where `smoltolk_hf` cannot be imported, loads
   the model and the processor with `trust_remote_code=True` and compares their logits with the original model's,
   and parses the model card with `huggingface_hub.ModelCard`;
3. with --push REPO_ID, uploads the folder in one commit (needs network access and `hf auth login`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap

import torch
from huggingface_hub import ModelCard
from quickstart import build_checkpoint  # the same example checkpoint (examples/ is on sys.path when run)

from smoltolk_hf import SmolTolkForCausalLM, SmolTolkProcessor
from smoltolk_hf.hub import export_for_hub, push_to_hub

PROMPT = "once upon a time"

# Runs in a fresh interpreter: only the folder's own code is available.
REMOTE_CHECK = """
import sys
sys.modules["smoltolk_hf"] = None  # as for a Hub user without the package
import torch
from transformers import AutoModelForCausalLM, AutoProcessor
model = AutoModelForCausalLM.from_pretrained({folder!r}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({folder!r}, trust_remote_code=True)
ids = processor(text={prompt!r}, return_tensors="pt")["input_ids"]
ids = torch.cat([ids, torch.tensor([[processor.speech_marker_id]])], dim=1)
with torch.no_grad():
    torch.save(model(ids).logits, {out!r})
print("loaded as remote code:", type(model).__module__, type(processor).__module__)
"""


def check_remote_loading(folder: str, model: SmolTolkForCausalLM, processor: SmolTolkProcessor) -> None:
    """Loads `folder` as remote code in a fresh process and checks its logits equal `model`'s on a prompt."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "logits.pt")
        script = REMOTE_CHECK.format(folder=os.path.abspath(folder), prompt=PROMPT, out=out)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": os.path.join(scratch, "hf_home")}
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"loading {folder} as remote code failed:\n{result.stderr[-3000:]}")
        print(result.stdout.strip())
        remote = torch.load(out)
    ids = processor(text=PROMPT, return_tensors="pt")["input_ids"]
    ids = torch.cat([ids, torch.tensor([[processor.speech_marker_id]])], dim=1)
    with torch.no_grad():
        local = model(ids).logits
    # Joint logits hold -inf for the modality that cannot come next: equal() compares those too.
    if not torch.equal(local, remote):
        raise RuntimeError("the remote-code model's logits differ from the original model's")
    print("remote-code logits equal the original model's")


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="where to write the Hub-ready folder")
    parser.add_argument("--model", default=None, help="a saved SmolTolk folder with its processor")
    parser.add_argument("--tiny", action="store_true", help="without --model: build a tiny model (else SmolTolk-150M)")
    parser.add_argument("--results", default=None, help="evaluation results JSON (`smoltolk eval`'s results.json)")
    parser.add_argument("--base-model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--push", default=None, metavar="REPO_ID", help="upload to this Hub repository")
    args = parser.parse_args(argv)

    card_info = dict(base_model=args.base_model, results=args.results)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or build_checkpoint(scratch, tiny=args.tiny)
        model = SmolTolkForCausalLM.from_pretrained(model_dir).eval()
        processor = SmolTolkProcessor.from_pretrained(model_dir)

        folder = export_for_hub(model, args.out_dir, processor, repo_id=args.push, **card_info)
        print(f"== Hub-ready folder {folder}: {sorted(os.listdir(folder))}")

        check_remote_loading(str(folder), model, processor)
        card = ModelCard.load(folder / "README.md")
        results = card.data.eval_results or []
        print(f"model card: {card.data.model_name}, base model {card.data.base_model}, {len(results)} results")
        print(textwrap.indent(card.text.strip()[:400] + " ...", "    "))

        if args.push:
            commit = push_to_hub(args.push, model, processor, **card_info)
            print(f"pushed: {commit.commit_url}")
    return str(folder)


if __name__ == "__main__":
    main()
