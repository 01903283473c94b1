"""The speech-continuation pipeline: prompt kinds, modality choice, sampling settings, batching, streaming, vocoder,
bad input, and the quickstart example."""

import runpy
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tiny_model_and_processor, tiny_vocoder, waveform
from transformers import pipeline

from smoltolk_hf import SmolTolkProcessor
from smoltolk_hf.pipeline_speech_continuation import (
    DEFAULT_SAMPLING,
    SmolTolkStreamer,
    SpeechContinuationPipeline,
    register_pipeline,
)

register_pipeline()  # what `import smoltolk_hf` does

GREEDY = dict(do_sample=False, max_new_tokens=8)
TEXT = "the quick brown fox"
UNITS = [3, 1, 4, 1, 5]
TEXT_THEN_SPEECH = [("text", TEXT), ("speech", [3, 1])]
SPEECH_THEN_TEXT = [("speech", [3, 1]), ("text", TEXT)]


@pytest.fixture(scope="module")
def model_and_processor():
    return tiny_model_and_processor()


@pytest.fixture(scope="module")
def pipe(model_and_processor):
    model, processor = model_and_processor
    return pipeline("speech-continuation", model=model, processor=processor, device="cpu")


def continuation_of(output: dict) -> list:
    return output["units"].tolist() if output["modality"] == "speech" else output["text"]


def test_pipeline_factory_builds_it(pipe):
    assert isinstance(pipe, SpeechContinuationPipeline)


@pytest.mark.parametrize(
    "prompt, processor_kwargs, continuation, modality, marker",
    [
        (TEXT, {"text": TEXT}, None, "text", None),
        (TEXT, {"text": TEXT}, "speech", "speech", "speech_marker_id"),
        (UNITS, {"units": UNITS}, None, "speech", None),
        (UNITS, {"units": UNITS}, "text", "text", "text_marker_id"),
        ({"units": np.array(UNITS)}, {"units": UNITS}, "speech", "speech", None),
        (TEXT_THEN_SPEECH, {"segments": TEXT_THEN_SPEECH}, None, "speech", None),
        (SPEECH_THEN_TEXT, {"segments": SPEECH_THEN_TEXT}, "speech", "speech", "speech_marker_id"),
        (waveform(), {"audio": waveform()}, None, "speech", None),
        ({"audio": waveform(), "sampling_rate": 16_000}, {"audio": waveform()}, "text", "text", "text_marker_id"),
    ],
)  # fmt: skip
def test_continuation_equals_generate(
    pipe, model_and_processor, prompt, processor_kwargs, continuation, modality, marker
):
    """The prompt's modality by default; the chosen modality's marker appended when it differs; real generate()."""
    model, processor = model_and_processor
    out = pipe(prompt, continuation=continuation, **GREEDY)
    assert out["modality"] == modality and "audio" not in out

    ids = processor(**processor_kwargs)["input_ids"] + ([getattr(model.config, marker)] if marker else [])
    new = model.generate(torch.tensor([ids]), **GREEDY)[0, len(ids) :]
    expected = processor.decode(new)
    if modality == "speech":
        assert out["units"].dtype == np.int64 and len(out["units"]) > 0
        np.testing.assert_array_equal(out["units"], np.concatenate([u for _, u in expected]))
    else:
        assert out["text"] == "".join(text for _, text in expected)


def test_audio_file_prompt(pipe, tmp_path):
    path = tmp_path / "prompt.wav"
    sf.write(path, waveform(), 16_000)
    assert continuation_of(pipe(path, **GREEDY)) == continuation_of(pipe(waveform(), **GREEDY))
    assert continuation_of(pipe({"audio": str(path)}, **GREEDY)) == continuation_of(pipe(path, **GREEDY))


def test_batch_equals_one_by_one(pipe):
    """Left-padded batches with prompts of several kinds and both continuation modalities."""
    prompts = [UNITS, TEXT, [("text", TEXT), ("speech", [7])], "hello world, how are you"]
    singles = [continuation_of(pipe(p, **GREEDY)) for p in prompts]
    batched = [continuation_of(o) for o in pipe(prompts, batch_size=3, **GREEDY)]
    assert batched == singles


def test_sampling_settings_per_modality(model_and_processor, monkeypatch):
    model, processor = model_and_processor
    calls = []
    real_generate = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    pipe = pipeline("speech-continuation", model=model, processor=processor, device="cpu", max_new_tokens=4)

    def settings(**call_kwargs):
        calls.clear()
        pipe([UNITS, TEXT], batch_size=2, **call_kwargs)
        by_modality = {}
        for kwargs in calls:
            modality = "speech" if kwargs["input_ids"][0, -1] >= model.config.speech_marker_id else "text"
            by_modality[modality] = {k: kwargs.get(k) for k in ("do_sample", "temperature", "top_k", "max_new_tokens")}
        return by_modality

    assert DEFAULT_SAMPLING["speech"] == dict(do_sample=True, temperature=0.8, top_k=50)  # the paper authors'
    assert settings() == {
        "speech": dict(do_sample=True, temperature=0.8, top_k=50, max_new_tokens=4),
        "text": dict(do_sample=True, temperature=0.4, top_k=50, max_new_tokens=4),
    }
    assert settings(sampling={"speech": {"temperature": 0.6}})["speech"]["temperature"] == 0.6
    assert {s["temperature"] for s in settings(temperature=0.3).values()} == {0.3}  # explicit beats per-modality
    assert settings(do_sample=False) == {
        m: dict(do_sample=False, temperature=None, top_k=None, max_new_tokens=4) for m in ("speech", "text")
    }


def test_seed_makes_sampling_reproducible(pipe):
    first = continuation_of(pipe(UNITS, max_new_tokens=12, seed=3))
    assert continuation_of(pipe(UNITS, max_new_tokens=12, seed=3)) == first
    assert any(continuation_of(pipe(UNITS, max_new_tokens=12, seed=s)) != first for s in (4, 5, 6))


@pytest.mark.parametrize("prompt, continuation", [(UNITS, None), (TEXT, "text")])
def test_streamer_yields_the_continuation(pipe, model_and_processor, prompt, continuation):
    streamer = SmolTolkStreamer(model_and_processor[1], timeout=60)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(pipe(prompt, continuation=continuation, streamer=streamer, **GREEDY))
    )
    thread.start()
    pieces = list(streamer)
    thread.join()
    if result["modality"] == "speech":
        assert pieces == [("speech", u) for u in result["units"].tolist()]
    else:
        assert {m for m, _ in pieces} == {"text"} and "".join(p for _, p in pieces) == result["text"]


def test_vocoder_audio(model_and_processor):
    model, processor = model_and_processor
    vocoder = tiny_vocoder()
    pipe = pipeline("speech-continuation", model=model, processor=processor, vocoder=vocoder, device="cpu")
    outputs = pipe([UNITS, TEXT, [4, 4, 2]], batch_size=3, **GREEDY)
    assert "audio" not in outputs[1]
    for out in (outputs[0], outputs[2]):
        assert out["sampling_rate"] == vocoder.sampling_rate and out["audio"].dtype == np.float32
        with torch.no_grad():  # deduplicated units: the vocoder's duration predictor restores their lengths
            expected, lengths = vocoder(torch.from_numpy(out["units"]), dur_prediction=True)
        np.testing.assert_allclose(out["audio"], expected[0, : lengths[0]].numpy(), atol=1e-5)


def test_processor_from_the_model_folder(model_and_processor, tmp_path):
    model, processor = model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    expected = continuation_of(pipeline("speech-continuation", model=model, processor=processor)(UNITS, **GREEDY))
    for kwargs in ({}, {"processor": str(tmp_path)}):
        pipe = pipeline("speech-continuation", model=str(tmp_path), device="cpu", **kwargs)
        assert isinstance(pipe.processor, SmolTolkProcessor)
        assert continuation_of(pipe(UNITS, **GREEDY)) == expected


def test_generation_stops_at_the_context(pipe, model_and_processor):
    context = model_and_processor[0].config.max_position_embeddings
    prompt = (UNITS * context)[: context - 4]  # with its <|speech|> marker: 3 positions left
    assert len(pipe(prompt, max_new_tokens=50, do_sample=False)["units"]) == 3


# ----- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32),
                                    {"segments": []}, {"text": ""}])  # fmt: skip
def test_empty_prompt(pipe, prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe(prompt)


def test_prompt_longer_than_the_context(pipe, model_and_processor):
    context = model_and_processor[0].config.max_position_embeddings
    with pytest.raises(ValueError, match="no room to generate"):
        pipe(UNITS * context)
    fits = (UNITS * context)[: context - 2]  # with its <|speech|> marker: one position left
    assert len(pipe(fits, max_new_tokens=5, do_sample=False)["units"]) == 1
    with pytest.raises(ValueError, match="no room to generate"):  # the appended <|text|> marker takes it
        pipe(fits, continuation="text")


def test_unknown_continuation_modality(pipe, model_and_processor):
    with pytest.raises(ValueError, match="continuation must be one of"):
        pipe(TEXT, continuation="audio")
    with pytest.raises(ValueError, match="continuation must be one of"):
        pipeline("speech-continuation", model=model_and_processor[0], processor=model_and_processor[1],
                 continuation="image")  # fmt: skip
    with pytest.raises(ValueError, match="per modality"):
        pipe(TEXT, sampling={"audio": {"temperature": 1.0}})


def test_vocoder_with_other_units(model_and_processor):
    model, processor = model_and_processor
    with pytest.raises(ValueError, match="expects 500 speech units but the model produces 20"):
        pipeline("speech-continuation", model=model, processor=processor, vocoder=tiny_vocoder(num_embeddings=500))


def test_unreadable_prompt_and_missing_processor(pipe, model_and_processor, tmp_path):
    with pytest.raises(ValueError, match="cannot read a prompt"):
        pipe(3.5)
    with pytest.raises(ValueError, match="exactly one of"):
        pipe({"text": TEXT, "units": UNITS})
    model_and_processor[0].save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pass processor="):
        pipeline("speech-continuation", model=str(tmp_path))


# ----- the quickstart example ---------------------------------------------------------------------------------


def test_quickstart_example_runs(capsys):
    quickstart = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "quickstart.py"), run_name="quickstart")
    results = quickstart["main"](["--tiny", "--max-new-tokens", "4"])
    assert results["text -> speech"]["modality"] == "speech" and len(results["text -> speech"]["units"]) == 4
    assert results["audio -> text"]["modality"] == "text"
    assert [r["modality"] for r in results["batch"]] == ["speech", "text"]
    assert results["pieces"] == [("speech", u) for u in results["text -> speech"]["units"].tolist()]
    assert "== 4. Streaming" in capsys.readouterr().out
