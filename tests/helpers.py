"""Helpers shared by the test files (tiny models, id builders, comparisons); fixtures live in conftest.py."""

import torch

from conftest import NUM_UNITS, tiny_text_model
from smoltolk_hf import SmolTolkForCausalLM


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
        "mixed": text + [cfg.speech_marker_id] + speech(cfg, [3, 7]) + [cfg.text_marker_id, 8, 11, cfg.speech_marker_id] + speech(cfg, [2]),
    }


def speech_model(seed=2, **overrides):
    """A random model whose speech head rarely picks eos, so speech generations are long enough to compare."""
    torch.manual_seed(seed)
    model = SmolTolkForCausalLM.from_text_model(tiny_text_model(seed), num_speech_units=NUM_UNITS, **overrides).eval()
    with torch.no_grad():
        model.model.speech_embed_tokens.weight[model.config.num_speech_units].mul_(0.0)
    return model
