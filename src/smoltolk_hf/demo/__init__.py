"""`smoltolk demo` and what only it uses: none of this is needed for a user's own training or evaluation run.

- `run`: the demo itself (`run_demo`), end to end on the embedded SmolLM2-135M backbone;
- `corpus`: a tiny word-aligned spoken corpus synthesised offline with espeak-ng (`synthesize_corpus`);
- `training`: two-stage training of SmolTolk-150M on that corpus on CPU (`run_demo_training`);
- `evaluation`: a spoken cloze set cut from the corpus, scored in four settings, and Figure 5 (`run_demo_evaluation`).
- `text_check`: 42 held-out stories with a right and a wrong ending (`heldout_stories.jsonl`), scored as text
  StoryCloze: whether speech training keeps the text LM (`text_check`).

The modules are imported from their own names (`smoltolk_hf.demo.run` etc.) so that importing the package stays light.
"""
