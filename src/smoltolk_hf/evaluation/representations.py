"""Representation analyses of paper section 5.2 and appendix C.1: intrinsic dimension and cross-modal subspace overlap.

Each sample (a text or speech excerpt, 20 words in the paper) is represented per backbone layer by the hidden state
of its last token. Activations above the 95th percentile are truncated before either analysis (transformers have
large activation outliers); we read "truncate" as clipping to `[-t, t]`, `t` the 95th percentile of the absolute
activations of the whole sample set of that layer.

- **Subspace overlap** (Figure 4): on paired data, the fraction of one modality's variance explained by projecting
  it (centred) onto the other modality's top 50 principal components; reported both ways and averaged.
- **Intrinsic dimension** (Figure 3): GRIDE (Denti et al., 2022) from dadapy, as the paper. dadapy pins
  `numpy<2`, which `datasets` cannot use, so it lives in its own environment (`scripts/setup_dadapy.sh`) and runs
  on representations saved as `.npy` (`intrinsic_dimension` calls `gride_dadapy.py` in that interpreter).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import padded_batches

DADAPY_PYTHON_ENV = "SMOLTOLK_DADAPY_PYTHON"
_GRIDE_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gride_dadapy.py")


def default_dadapy_python() -> str:
    """The dadapy interpreter: `$SMOLTOLK_DADAPY_PYTHON`, else the venv `scripts/setup_dadapy.sh` creates."""
    if os.environ.get(DADAPY_PYTHON_ENV):
        return os.environ[DADAPY_PYTHON_ENV]
    cache = os.environ.get("SMOLTOLK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "smoltolk_hf")
    return os.path.join(cache, "dadapy-venv", "bin", "python")


@torch.no_grad()
def last_token_representations(
    model: Any,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 8,
    pad_token_id: int = 0,
) -> np.ndarray:
    """Backbone hidden states at each sequence's last token: `(num_hidden_layers, num_sequences, hidden_size)`.

    Layer `l` is the output of backbone layer `l + 1` (the last one after the final norm, as the text head reads it).
    """
    device = next(model.parameters()).device
    out = np.zeros(
        (model.config.num_hidden_layers, len(sequences), model.config.hidden_size),
        dtype=np.float32,
    )
    batches = padded_batches(sequences, model.config, batch_size, None, device, "representations", pad_token_id)
    for rows, batch in batches:
        hidden = model.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states[1:]  # hidden_states[0] is the backbone input
        last = batch["attention_mask"].sum(-1) - 1
        for layer, states in enumerate(hidden):
            out[layer, rows] = states[torch.arange(len(rows), device=device), last].float().cpu().numpy()
    return out


def truncate_activations(representations: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """Clips `(num_samples, dim)` activations to the `percentile` of their absolute values over the whole set."""
    threshold = np.percentile(np.abs(representations), percentile)
    return np.clip(representations, -threshold, threshold)


def explained_variance_fraction(source: np.ndarray, reference: np.ndarray, n_components: int = 50) -> float:
    """Fraction of the variance of `source` (centred) inside the span of `reference`'s top principal components."""
    reference = reference - reference.mean(axis=0)
    source = source - source.mean(axis=0)
    _, _, vt = np.linalg.svd(reference.astype(np.float64), full_matrices=False)
    basis = vt[:n_components]  # (k, dim), orthonormal rows
    total = float((source.astype(np.float64) ** 2).sum())
    if total == 0.0:
        raise ValueError("the source representations have no variance")
    return float(((source @ basis.T) ** 2).sum() / total)


def subspace_overlap(
    speech: np.ndarray,
    text: np.ndarray,
    n_components: int = 50,
    percentile: float | None = 95.0,
) -> list[dict[str, float]]:
    """Per layer, cross-modal subspace overlap of paired `(layers, samples, dim)` speech and text representations.

    Returns one dict per layer: `speech_on_text` (speech variance explained by text's top components),
    `text_on_speech`, and their `mean` (what Figure 4 plots).
    """
    if speech.shape != text.shape:
        raise ValueError(f"paired representations must have the same shape, got {speech.shape} and {text.shape}")
    results = []
    for s, t in tqdm(list(zip(speech, text)), desc="subspace overlap", unit="layer", leave=False):
        if percentile is not None:
            s, t = (
                truncate_activations(s, percentile),
                truncate_activations(t, percentile),
            )
        speech_on_text = explained_variance_fraction(s, t, n_components)
        text_on_speech = explained_variance_fraction(t, s, n_components)
        results.append(
            {
                "speech_on_text": speech_on_text,
                "text_on_speech": text_on_speech,
                "mean": (speech_on_text + text_on_speech) / 2,
            }
        )
    return results


def intrinsic_dimension(
    representations: np.ndarray | str | os.PathLike,
    python: str | None = None,
    batch_size: int = 10_000,
    percentile: float | None = 95.0,
    range_max: int = 64,
    scale: int = 16,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """GRIDE intrinsic dimension per layer of `(layers, samples, dim)` representations (an array or a `.npy` path).

    As appendix C.1: samples are split into batches of `batch_size` (five of 10k in the paper), each batch gives one
    estimate, and the mean and standard deviation over batches are reported. GRIDE gives estimates at neighbour
    scales 2, 4, ..., `range_max`; the reported one is at `scale` (the whole curve is returned too).

    Runs in the dadapy interpreter (`python`, default `default_dadapy_python()`).

    Returns:
        Per layer: `{"id": mean, "id_std": std over batches, "batches": [...], "scales": [...], "curve": [...]}`.
    """
    python = python or default_dadapy_python()
    if not os.path.isfile(python):
        raise FileNotFoundError(
            f"no dadapy interpreter at {python}: run `bash scripts/setup_dadapy.sh` or set ${DADAPY_PYTHON_ENV}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(representations, np.ndarray):
            if percentile is not None:
                representations = np.stack([truncate_activations(layer, percentile) for layer in representations])
            path = os.path.join(tmp, "representations.npy")
            np.save(path, representations.astype(np.float32))
        else:
            if percentile is not None:
                array = np.load(representations)
                return intrinsic_dimension(array, python, batch_size, percentile, range_max, scale, seed)
            path = os.fspath(representations)
        out_path = os.path.join(tmp, "gride.json")
        arguments = json.dumps(
            {
                "input": path,
                "output": out_path,
                "batch_size": batch_size,
                "range_max": range_max,
                "scale": scale,
                "seed": seed,
            }
        )
        subprocess.run([python, _GRIDE_WORKER, arguments], check=True)
        with open(out_path) as f:
            return json.load(f)


def paired_samples(rows: Sequence[Any], processor: Any, max_words: int = 20) -> tuple[list, list]:
    """Joint ids of paired text and speech samples: the first `max_words` words of each aligned utterance (20 in
    appendix C.1) as text and the units up to the end of its last word as speech."""
    from .segmentation import word_boundaries

    text, speech = [], []
    for row in rows:
        words, units = list(row["words"]), list(row["units"])
        if not words or not units or len(row["word_end_times"]) != len(words):
            continue
        if len(words) > max_words:
            cut = word_boundaries(row["durations"], [row["word_end_times"][max_words - 1]], row["frame_rate"])
            if len(cut) == 0:
                continue
            words, units = words[:max_words], units[: int(cut[0])]
        text.append(processor(text=" ".join(words))["input_ids"])
        speech.append(processor(units=units)["input_ids"])
    return text, speech


def representation_figures(
    model: Any,
    processor: Any,
    dataset: Any,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    n_components: int = 50,
    python: str | None = None,
    prominence: float = 0.05,
) -> dict[str, Any]:
    """Figures 3, 4 and 5 of the paper for one model on a units dataset with transcripts and word alignments.

    Paired samples (`paired_samples`) give the last-token representations of every layer in both modalities:
    Figure 4 plots their subspace overlap per layer, Figure 3 the GRIDE intrinsic dimension of each modality per
    layer (skipped, with the reason recorded, when the dadapy interpreter is missing), Figure 5 the selector
    weights across the first aligned utterance with its word boundaries and the peaks of `omega^(L)` at
    `prominence` (the tuned one of the segmentation, when run; needs the dynamic selector).

    Returns:
        The numbers behind the figures and the PNG paths (`figure3`, `figure4`, `figure5`).
    """
    from .plots import plot_layer_weights, plot_per_layer
    from .segmentation import aligned_rows, detect_peaks, layer_weights, word_boundaries

    out_dir = os.fspath(out_dir)
    rows = aligned_rows(dataset)
    text_ids, speech_ids = paired_samples(rows, processor)
    if len(text_ids) < 3:
        raise ValueError(f"representation analyses need at least 3 word-aligned utterances, got {len(text_ids)}")
    text = last_token_representations(model, text_ids, batch_size, processor.pad_token_id)
    speech = last_token_representations(model, speech_ids, batch_size, processor.pad_token_id)
    components = min(n_components, len(text_ids) - 1)
    overlap = subspace_overlap(speech, text, components)
    result: dict[str, Any] = {"num_samples": len(text_ids), "n_components": components, "subspace_overlap": overlap}
    curves = {
        "mean of both directions": [o["mean"] for o in overlap],
        "speech on text's components": [o["speech_on_text"] for o in overlap],
        "text on speech's components": [o["text_on_speech"] for o in overlap],
    }
    result["figure4"] = plot_per_layer(
        curves,
        os.path.join(out_dir, "figure4_subspace_overlap.png"),
        ylabel=f"fraction of variance explained\nby the other modality's top {components} PCs",
        title="Figure 4: cross-modal subspace overlap per layer",
    )
    # GRIDE needs more distinct points than neighbours: shrink the scales for small sample sets.
    distinct = min(len(np.unique(reps[0], axis=0)) for reps in (text, speech))
    range_max = min(64, 2 ** int(np.log2(max(distinct - 1, 2))))
    try:
        dimensions = {
            name: intrinsic_dimension(reps, python, range_max=range_max, scale=min(16, range_max))
            for name, reps in (("text", text), ("speech", speech))
        }
    except FileNotFoundError as error:
        result["figure3"], result["figure3_skipped"] = None, str(error)
        print(f"Figure 3 skipped: {error}")
    else:
        result["intrinsic_dimension"] = dimensions
        result["figure3"] = plot_per_layer(
            {name: [layer["id"] for layer in d] for name, d in dimensions.items()},
            os.path.join(out_dir, "figure3_intrinsic_dimension.png"),
            ylabel=f"intrinsic dimension (GRIDE, scale {min(16, range_max)})",
            title="Figure 3: intrinsic dimension of the representations per layer",
            errors={name: [layer["id_std"] for layer in d] for name, d in dimensions.items()},
        )
    if model.config.use_dynamic_pooling:
        row = rows[0]
        omega = layer_weights(model, processor, [row["units"]])[0]
        ends = [
            (int(b[0]), word)
            for word, end in zip(row["words"], row["word_end_times"])
            if len(b := word_boundaries(row["durations"], [end], row["frame_rate"]))
        ]
        result["figure5"] = plot_layer_weights(
            omega,
            os.path.join(out_dir, "figure5_layer_weights.png"),
            boundaries=[b for b, _ in ends],
            words=[w for _, w in ends],
            peaks=detect_peaks(omega[:, -1], prominence),
            title=f"Figure 5: selector weights across utterance {row['id']} (dashed: word ends)",
        )
    return result
