"""Helpers shared by the test files (tiny models and data, id builders, comparisons); fixtures live in conftest.py.

Test files import from here (`from helpers import ...`), never from one another. Every model and data set is tiny
and random, so the suite runs offline on a few CPU cores.
"""

import math
import os

import datasets
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from smoltolk_hf import MfccFrontEnd, SmolTolkConfig, SmolTolkForCausalLM, SmolTolkProcessor, SpeechTokenizer
from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.testing_utils import byte_level_tokenizer
from smoltolk_hf.training import TwoStageSchedule
from smoltolk_hf.training.trainer import SmolTolkTrainer
from smoltolk_hf.vocoder import UnitVocoder, UnitVocoderConfig

# ----- tiny models --------------------------------------------------------------------------------------------

TINY_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    # A wide init makes random models prefer varied tokens, so generation checks are not trivially constant.
    "initializer_range": 0.2,
}
TINY_BACKBONE = {
    "vocab_size": 100,
    **TINY_SIZES,
    "max_position_embeddings": 128,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
NUM_UNITS = 20  # speech units of the tiny models and of the tiny vocoder that voices them


def tiny_text_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY_BACKBONE)).eval()


def speech(cfg, units):
    return [cfg.speech_token_offset + u for u in units]


def mixed_ids(cfg, seed=0, batch=2):
    """text, <|speech|>, speech, <|text|>, text, <|speech|>, speech: every transition the model must handle."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch):
        t1 = torch.randint(3, cfg.vocab_size, (5,), generator=g).tolist()
        s1 = speech(cfg, torch.randint(0, NUM_UNITS, (6,), generator=g).tolist())
        t2 = torch.randint(3, cfg.vocab_size, (4,), generator=g).tolist()
        s2 = speech(cfg, torch.randint(0, NUM_UNITS, (5,), generator=g).tolist())
        rows.append(t1 + [cfg.speech_marker_id] + s1 + [cfg.text_marker_id] + t2 + [cfg.speech_marker_id] + s2)
    return torch.tensor(rows)


def assert_same_logits(a, b, atol=0.0):
    """Joint logits hold -inf: compare the -inf pattern and the finite entries separately."""
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    finite = torch.isfinite(a)
    torch.testing.assert_close(a[finite], b[finite], atol=atol, rtol=0)


def prompts(cfg):
    text = [5, 17, 33, 41, 9]
    return {
        "text": text,
        "speech": [cfg.speech_marker_id] + speech(cfg, [3, 7, 1, 12, 4]),
        "text_then_speech_marker": text + [cfg.speech_marker_id],
        "mixed": text
        + [cfg.speech_marker_id]
        + speech(cfg, [3, 7])
        + [cfg.text_marker_id, 8, 11, cfg.speech_marker_id]
        + speech(cfg, [2]),
    }


# Tiny backbones initialise at std 0.2 (TINY_BACKBONE), so fresh speech rows already have the scale that
# NEW_MODEL_SPEECH_EMBEDDING_SCALE gives the real ones; scaled again, the tied head's copy of the residual input makes
# a random model repeat its last unit, and generation tests that need varied continuations would compare nothing.
UNSCALED_SPEECH = {"speech_embedding_scale": 1.0}


def speech_model(seed=2, **overrides):
    """A random model whose speech head rarely picks eos, so speech generations are long enough to compare."""
    torch.manual_seed(seed)
    overrides = {**UNSCALED_SPEECH, **overrides}
    model = SmolTolkForCausalLM.from_text_model(tiny_text_model(seed), num_speech_units=NUM_UNITS, **overrides).eval()
    with torch.no_grad():
        model.model.speech_embed_tokens.weight[model.config.num_speech_units].mul_(0.0)
    return model


# ----- pipeline: a real (tiny BPE) text tokenizer and a speech tokenizer ---------------------------------------

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a speech language model reads text and speech",
    "hello world, how are you today?",
]


def tiny_model_and_processor(seed: int = 0) -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    """A tiny random SmolTolk whose text vocabulary is a real (tiny BPE) tokenizer's, and its processor."""
    tokenizer = byte_level_tokenizer(SENTENCES)
    torch.manual_seed(seed)
    sizes = {**TINY_BACKBONE, "vocab_size": len(tokenizer), "bos_token_id": None, "pad_token_id": None}
    backbone = LlamaForCausalLM(LlamaConfig(**{**sizes, "eos_token_id": tokenizer.eos_token_id}))
    model = SmolTolkForCausalLM.from_text_model(backbone, num_speech_units=NUM_UNITS, **UNSCALED_SPEECH).eval()
    with torch.no_grad():  # a speech head that rarely ends, so that speech continuations are long enough to compare
        model.model.speech_embed_tokens.weight[NUM_UNITS].zero_()
    speech_tokenizer = SpeechTokenizer(np.random.default_rng(seed).standard_normal((NUM_UNITS, 20)), MfccFrontEnd())
    return model, SmolTolkProcessor.from_config(tokenizer, speech_tokenizer, model.config)


def waveform(seconds: float = 0.5, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16_000))).astype(np.float32)


# ----- vocoder ------------------------------------------------------------------------------------------------


def tiny_vocoder_config(**overrides) -> UnitVocoderConfig:
    values = {
        "num_embeddings": NUM_UNITS,
        "embedding_dim": 8,
        "upsample_rates": [2, 3],
        "upsample_kernel_sizes": [4, 7],
        "upsample_initial_channel": 16,
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "duration_predictor_hidden_dim": 8,
    }
    values.update(overrides)
    return UnitVocoderConfig(**values)


def tiny_vocoder(seed: int = 0, **overrides) -> UnitVocoder:
    torch.manual_seed(seed)
    model = UnitVocoder(tiny_vocoder_config(**overrides)).eval()
    with torch.no_grad():
        # HiFi-GAN's N(0, 0.01) init makes near-silent audio at tiny widths; use unit-variance-preserving weights
        # so the audio is O(0.1) and the tests' comparisons are meaningful.
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)):
                # Conv1d weights are (out, in, k); ConvTranspose1d weights are (in, out, k).
                per_output = module.weight[0] if isinstance(module, torch.nn.Conv1d) else module.weight[:, 0]
                module.weight.normal_(0.0, per_output.numel() ** -0.5)
        # Spread predicted durations over roughly 1..6 frames.
        if model.dur_predictor is not None:
            model.dur_predictor.proj.weight.normal_(0.0, 0.5)
            model.dur_predictor.proj.bias.fill_(math.log(4.0))
    return model


# ----- evaluation: a model and processor without speech tokenizer (speech as units) ---------------------------

EVAL_NUM_UNITS = 12
EVAL_SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "she went home and slept",
    "he ate the red apple",
]


def eval_cloze_items(n: int = 6, seed: int = 0) -> list:
    """Cloze items with a context and two continuations in text and speech (units), texts from EVAL_SENTENCES."""
    from smoltolk_hf.evaluation import ClozeItem

    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        units = [rng.integers(0, EVAL_NUM_UNITS, size=int(rng.integers(3, 9))) for _ in range(3)]
        texts = [EVAL_SENTENCES[(i + k) % len(EVAL_SENTENCES)] for k in range(3)]
        items.append(
            ClozeItem(
                id=str(i),
                context={"text": texts[0], "speech": units[0]},
                correct={"text": texts[1], "speech": units[1]},
                incorrect={"text": texts[2], "speech": units[2]},
            )
        )
    return items


def tiny_audio_eval_model() -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    """`tiny_eval_model` with a small MFCC speech tokenizer, so that benchmarks can be given as audio files."""
    model, processor = tiny_eval_model()
    speech_tokenizer = SpeechTokenizer(np.random.default_rng(0).standard_normal((EVAL_NUM_UNITS, 20)), MfccFrontEnd())
    return model, SmolTolkProcessor.from_config(processor.tokenizer, speech_tokenizer, model.config)


def tiny_eval_model(seed: int = 0, **overrides) -> tuple[SmolTolkForCausalLM, SmolTolkProcessor]:
    """A tiny random SmolTolk and a processor without speech tokenizer (speech as units)."""
    tokenizer = byte_level_tokenizer(EVAL_SENTENCES, vocab_size=290)
    config = SmolTolkConfig(
        vocab_size=len(tokenizer),
        num_speech_units=EVAL_NUM_UNITS,
        **TINY_SIZES,
        max_position_embeddings=256,
        **overrides,
    )
    torch.manual_seed(seed)
    model = SmolTolkForCausalLM(config).eval()
    return model, SmolTolkProcessor.from_config(tokenizer, None, config)


# ----- training data: word-aligned unit utterances and text documents over the words "w0".."w999" ------------

DATA_NUM_UNITS = 40
FRAME_RATE = 25.0
TOKENIZER = byte_level_tokenizer(
    [" ".join(f"w{j}" for j in range(i, 1000, 7)) for i in range(7)], vocab_size=320, eos_token="<eos>"
)
LAYOUT = SmolTolkConfig(vocab_size=len(TOKENIZER), num_speech_units=DATA_NUM_UNITS)


def make_speech_data(num_utterances: int = 12, seed: int = 0, unaligned: int = 0):
    """Utterances of globally unique words "w<j>" with known per-word units and exact alignments.

    Returns the dataset and `word_units[j]`, the units of word j (leading silence belongs to the first
    word of an utterance, trailing silence to none).
    """
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("id", "units", "durations", "text", "words", "word_end_times", "frame_rate")}
    word_units, next_word, unit = [], 0, 0
    for u in range(num_utterances):
        words = [f"w{next_word + i}" for i in range(int(rng.integers(3, 45)))]
        next_word += len(words)
        units, durations, ends = [], [], []
        for w in range(len(words) + 1):  # the extra "word" is trailing silence
            count = int(rng.integers(1, 5)) + (2 if w == 0 else 0)  # leading silence joins the first word
            own = []
            for _ in range(count):
                unit = (unit + int(rng.integers(1, DATA_NUM_UNITS))) % DATA_NUM_UNITS  # never an adjacent repeat
                own.append(unit)
                durations.append(int(rng.integers(1, 4)))
            units += own
            if w < len(words):
                word_units.append(own)
                # End time inside the word's last frame, so that rounding to frames is exercised.
                ends.append((sum(durations) - rng.uniform(0.1, 0.45)) / FRAME_RATE)
        aligned = u >= unaligned
        rows["id"].append(f"utt{u}")
        rows["units"].append(units)
        rows["durations"].append(durations)
        rows["text"].append(" ".join(words))
        rows["words"].append(words)
        rows["word_end_times"].append(ends if aligned else [])
        rows["frame_rate"].append(FRAME_RATE)
    return datasets.Dataset.from_dict(rows), word_units


def make_text_data(num_documents: int = 10, seed: int = 0, column: str = "input_ids") -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    texts = [" ".join(f"w{j}" for j in rng.integers(0, 1000, rng.integers(1, 15))) for _ in range(num_documents)]
    if column == "text":
        return datasets.Dataset.from_dict({"text": texts})
    return datasets.Dataset.from_dict({"input_ids": TOKENIZER(texts, add_special_tokens=False)["input_ids"]})


# ----- training runs ------------------------------------------------------------------------------------------

TINY_LLAMA = {
    "vocab_size": len(TOKENIZER),
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
    "eos_token_id": TOKENIZER.eos_token_id,
}
STAGE1, STEPS, BATCH = 4, 8, 3


def write_assets(root: str) -> dict[str, str]:
    """A tiny text LM with its tokenizer, tiny unit/text datasets and a speech tokenizer of `DATA_NUM_UNITS` units
    (random MFCC codebook), saved to disk as a user would have them."""
    torch.manual_seed(0)
    paths = {name: os.path.join(root, name) for name in ("backbone", "units", "text", "speech_tokenizer")}
    LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).save_pretrained(paths["backbone"])
    TOKENIZER.save_pretrained(paths["backbone"])
    make_speech_data(num_utterances=24, seed=1)[0].save_to_disk(paths["units"])
    make_text_data(40, seed=2).save_to_disk(paths["text"])
    codebook = np.random.default_rng(0).standard_normal((DATA_NUM_UNITS, 20))
    SpeechTokenizer(codebook, MfccFrontEnd()).save_pretrained(paths["speech_tokenizer"])
    return paths


def tiny_training_config(assets: dict[str, str], output_dir: str, **training) -> dict:
    return {
        "model": {
            "from_text_model": assets["backbone"],
            "num_speech_units": DATA_NUM_UNITS,
            "attn_implementation": "eager",
        },
        "data": {
            "context_length": 64,
            "speech": [assets["units"]],
            "text": [{"path": assets["text"], "weight": 1.0}],
            "interleaved": [{"path": assets["units"]}],
        },
        "stages": {"stage1_steps": STAGE1, "warmup_steps": 2, "peak_factor": 10.0, "decay_fraction": 0.5},
        "training": {
            "output_dir": output_dir,
            "max_steps": STEPS,
            "per_device_train_batch_size": BATCH,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 3,
            **training,
        },
    }


# ----- loss normalisation: one SGD step over a fixed, padded global batch -------------------------------------

GLOBAL_BATCH = 4
SGD_RATE = 0.1


def entropy_model(seed: int = 0) -> SmolTolkForCausalLM:
    """A tiny SmolTolk whose loss has a strong selector-entropy term (`entropy_beta=0.5`)."""
    torch.manual_seed(seed)
    return SmolTolkForCausalLM.from_text_model(
        tiny_text_model(seed), num_speech_units=NUM_UNITS, entropy_beta=0.5, attn_implementation="eager"
    )


def padded_examples(cfg, lengths=(7, 10, 14, 21), seed: int = 0) -> list[dict[str, list[int]]]:
    """`GLOBAL_BATCH` mixed text/speech samples of different lengths, so that every batch of them is padded."""
    rows = mixed_ids(cfg, seed=seed, batch=len(lengths))
    return [{"input_ids": row[:length].tolist()} for row, length in zip(rows, lengths)]


def one_sgd_step(model, examples, output_dir: str, per_device: int, accumulation: int = 1, **training):
    """One SGD step (`SGD_RATE`, no clipping, no decay) of a `SmolTolkTrainer` over `examples`; `training` adds
    `TrainingArguments`."""
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=SGD_RATE,
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        **training,
    )
    trainer = SmolTolkTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=SmolTolkDataCollator(model.config),
        schedule=TwoStageSchedule(stage1_steps=0, warmup_steps=0),
    )
    trainer.train()
    return trainer


def reference_sgd_step(model, examples) -> dict[str, torch.Tensor]:
    """Weights after one SGD step (`SGD_RATE`) on the plain loss of the model on the whole batch."""
    model.train()
    model.zero_grad()
    model(**SmolTolkDataCollator(model.config)(examples)).loss.backward()
    return {name: (p - SGD_RATE * p.grad).detach() for name, p in model.named_parameters()}
