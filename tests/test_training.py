"""Two-stage training through the HF Trainer: frozen backbone, schedules, exact resume, logging, config errors."""

from __future__ import annotations

import copy
import functools
import json
import math

import datasets
import pytest
import torch
import yaml
from helpers import (
    BATCH,
    DATA_NUM_UNITS,
    STAGE1,
    STEPS,
    make_speech_data,
    make_text_data,
    tiny_training_config,
    write_assets,
)
from transformers import TrainerCallback

from smoltolk_hf.modeling_smoltolk import SmolTolkForCausalLM
from smoltolk_hf.training import TwoStageSchedule, build_trainer, cli_train, parameter_groups, run_training
from smoltolk_hf.training.callback import STATE_NAME
from smoltolk_hf.training.optim import PAPER_BATCH_TOKENS, parameter_role, sqrt_batch_factor, stage1_peak_factor


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    return write_assets(str(tmp_path_factory.mktemp("assets")))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


class Recorder(TrainerCallback):
    """Weights after each optimizer step and each group's learning rate during it."""

    def __init__(self):
        self.snapshots, self.lrs, self.with_adam_state, self.with_grad = {}, {}, {}, {}

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.lrs[state.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups}
        self.with_grad[state.global_step] = {  # after backward: parameters with a gradient / requiring one
            name: (p.grad is not None, p.requires_grad) for name, p in model.named_parameters()
        }

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.snapshots[state.global_step] = weights(model)
        self.with_adam_state[state.global_step] = {
            g["role"]: sum(bool(optimizer.state.get(p)) for p in g["params"]) for g in optimizer.param_groups
        }


@pytest.fixture(scope="module")
def two_stage_run(assets, tmp_path_factory):
    trainer = build_trainer(tiny_training_config(assets, str(tmp_path_factory.mktemp("run"))))
    recorder = Recorder()
    trainer.add_callback(recorder)
    initial = weights(trainer.model)
    trainer.train()
    return trainer, recorder, initial


def test_parameter_groups_cover_every_parameter_once_with_decay_on_matrices_only(tiny_smoltolk):
    groups = parameter_groups(tiny_smoltolk, weight_decay=0.1)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in tiny_smoltolk.parameters()) and len(set(grouped)) == len(grouped)
    names = {id(p): n for n, p in tiny_smoltolk.named_parameters()}
    for group in groups:
        for p in group["params"]:
            assert parameter_role(names[id(p)]) == group["role"]
            assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0)
    roles = {names[id(p)]: g["role"] for g in groups for p in g["params"]}
    assert roles["model.embed_tokens.weight"] == roles["model.norm.weight"] == "backbone"
    assert roles["model.layer_pooling.static_weights"] == "pooling"
    assert roles["model.speech_embed_tokens.weight"] == roles["model.marker_embed.weight"] == "speech"
    assert parameter_role("module._fsdp_wrapped_module.model.input_adapter.0.mlp.up_proj.weight") == "speech"
    with pytest.raises(ValueError, match="no training role"):
        parameter_role("model.something_new.weight")


def test_schedule_factors():
    schedule = TwoStageSchedule(stage1_steps=1000, warmup_steps=100, peak_factor=10.0, decay_fraction=0.2)
    speech = [schedule.lr_factor("speech", s) for s in (0, 49, 99, 500, 799, 800, 900, 999, 1000, 5000)]
    assert speech == pytest.approx([0.1, 5.0, 10.0, 10.0, 10.0, 10.0, 5.0, 0.05, 1.0, 1.0])
    assert [schedule.lr_factor("backbone", s) for s in (0, 999, 1000)] == [0.0, 0.0, 1.0]
    assert [schedule.lr_factor("pooling", s) for s in (0, 999, 1000)] == [1.0, 1.0, 1.0]
    assert TwoStageSchedule(stage1_steps=0, warmup_steps=0).lr_factor("backbone", 0) == 1.0
    with pytest.raises(ValueError, match="warmup_steps"):
        TwoStageSchedule(stage1_steps=10, warmup_steps=20)


def test_stage2_backbone_factor_and_warm_up():
    schedule = TwoStageSchedule(stage1_steps=10, warmup_steps=2, backbone_factor=0.1, stage2_warmup_steps=4)
    steps = (9, 10, 11, 13, 14, 100)
    assert [schedule.lr_factor("backbone", s) for s in steps] == pytest.approx([0.0, 0.025, 0.05, 0.1, 0.1, 0.1])
    # step 9: the stage-1 peak 10 x decay 1/2
    assert [schedule.lr_factor("speech", s) for s in steps] == pytest.approx([5.0, 0.25, 0.5, 1.0, 1.0, 1.0])
    assert [schedule.lr_factor("pooling", s) for s in steps] == pytest.approx([1.0, 0.25, 0.5, 1.0, 1.0, 1.0])
    for bad in ({"backbone_factor": 0.0}, {"stage2_warmup_steps": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TwoStageSchedule(**bad)


def test_square_root_batch_rule():
    assert sqrt_batch_factor(PAPER_BATCH_TOKENS) == 1.0
    assert sqrt_batch_factor(PAPER_BATCH_TOKENS // 4) == pytest.approx(0.5)
    assert sqrt_batch_factor(512) == pytest.approx(0.0221, abs=1e-4)  # the demo: 2 x 256 ids per step
    assert sqrt_batch_factor(4 * PAPER_BATCH_TOKENS) == 1.0  # never above the paper's rate
    with pytest.raises(ValueError, match="tokens_per_step"):
        sqrt_batch_factor(0)


def test_stage1_peak_rule():
    """The speech parts' stage-1 peak: the paper's 10x at its batch, scaled by the square-root rule, floored at 1."""
    assert stage1_peak_factor(PAPER_BATCH_TOKENS) == 10.0
    assert stage1_peak_factor(64 * 2048) == pytest.approx(10 * math.sqrt(1 / 8))  # one GPU, the 150M config
    assert stage1_peak_factor(2 * 128) == stage1_peak_factor(10_000) == 1.0  # the demo; the floor
    assert stage1_peak_factor(4 * PAPER_BATCH_TOKENS) == 10.0
    # Built by hand and left unset: the paper's peak.
    schedule = TwoStageSchedule(stage1_steps=10, warmup_steps=2)
    assert schedule.peak_factor is None and schedule.lr_factor("speech", 1) == 10.0
    with pytest.raises(ValueError, match="peak_factor"):
        TwoStageSchedule(peak_factor=0.0)


def test_build_trainer_sets_the_backbone_rate_by_the_batch(assets, tmp_path):
    """Unset, the stage-2 backbone factor and the stage-1 speech peak follow the square-root rule for context x batch
    x accumulation (the peak floored at 1); set in the YAML, they are kept."""
    config = tiny_training_config(assets, str(tmp_path), gradient_accumulation_steps=3)
    trainer = build_trainer(config)
    tokens = 64 * BATCH * 3
    assert trainer.schedule.backbone_factor == pytest.approx(math.sqrt(tokens / PAPER_BATCH_TOKENS))
    assert trainer.schedule.peak_factor == 10.0  # set in the YAML: kept
    config["stages"]["backbone_factor"] = 1
    del config["stages"]["peak_factor"]
    trainer = build_trainer(config)
    assert trainer.schedule.backbone_factor == 1.0 and trainer.schedule.peak_factor == 1.0  # unset: the floored rule


def test_stage1_freezes_the_backbone_bit_for_bit_and_stage2_trains_it(two_stage_run):
    trainer, recorder, initial = two_stage_run
    assert trainer.state.global_step == STEPS
    after_stage1, final = recorder.snapshots[STAGE1], recorder.snapshots[STEPS]
    for name, value in initial.items():
        role = parameter_role(name)
        if role == "backbone":
            assert torch.equal(after_stage1[name], value), f"{name} moved in stage 1"
            assert not torch.equal(final[name], value), f"{name} did not move in stage 2"
        else:
            assert not torch.equal(after_stage1[name], value), f"{name} did not move in stage 1"
    # AdamW skipped the frozen parameters in stage 1 (no moments, no decay): stage 2 starts them fresh.
    assert recorder.with_adam_state[STAGE1]["backbone"] == 0 < recorder.with_adam_state[STAGE1]["speech"]
    assert recorder.with_adam_state[STAGE1 + 1]["backbone"] > 0
    assert trainer.model.lm_head.weight is trainer.model.model.embed_tokens.weight


def test_stage1_computes_no_backbone_gradient_but_the_input_adapter_gets_one(two_stage_run):
    trainer, recorder, _ = two_stage_run
    for step, params in recorder.with_grad.items():
        for name, (has_grad, requires_grad) in params.items():
            trained = step >= STAGE1 or parameter_role(name) != "backbone"
            assert has_grad == requires_grad == trained, (step, name)
    # through the frozen backbone: the input adapter sits below it
    assert recorder.with_grad[0]["model.input_adapter.0.mlp.up_proj.weight"] == (True, True)
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_stage1_freezing_gives_the_weights_of_dropping_the_backbone_gradients(assets, two_stage_run, tmp_path):
    """Reference: the previous semantics, with the backbone trainable and its stage-1 gradients dropped after
    backward (the path `SmolTolkTrainer` keeps for wrapped models); the weights must match bit for bit."""
    _, recorder, _ = two_stage_run
    reference = build_trainer(tiny_training_config(assets, str(tmp_path)))
    reference.training_step = functools.partial(training_step_of_wrapped_model, reference)
    reference.train()
    assert not reference._frozen and all(p.requires_grad for p in reference.model.parameters())
    for name, value in weights(reference.model).items():
        assert torch.equal(recorder.snapshots[STEPS][name], value), name


def test_stage1_freezing_under_gradient_checkpointing_gives_the_same_weights(assets, two_stage_run, tmp_path):
    """Checkpointed layers recompute their forward in backward; with the backbone frozen the gradient must still
    reach the input adapter below them (their inputs require grad)."""
    _, recorder, _ = two_stage_run
    checkpointed = build_trainer(tiny_training_config(assets, str(tmp_path), activation_checkpointing=True))
    checkpointed.train()
    assert checkpointed.model.is_activation_checkpointing
    for name, value in weights(checkpointed.model).items():
        torch.testing.assert_close(value, recorder.snapshots[STEPS][name], msg=name)


def test_resume_from_a_stage1_checkpoint_freezes_again(assets, two_stage_run, tmp_path):
    _, straight, _ = two_stage_run
    config = tiny_training_config(assets, str(tmp_path), max_steps=2, save_strategy="steps", save_steps=2)
    run_training(config)
    resumed = build_trainer(tiny_training_config(assets, str(tmp_path)))
    recorder = Recorder()
    resumed.add_callback(recorder)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert recorder.with_grad[2] == straight.with_grad[2] and recorder.with_grad[STAGE1] == straight.with_grad[STAGE1]
    for name, value in weights(resumed.model).items():
        assert torch.equal(straight.snapshots[STEPS][name], value), name


def training_step_of_wrapped_model(trainer, model, inputs, num_items_in_batch=None):
    """`SmolTolkTrainer.training_step` as for a wrapped model (a stand-in wrapper that forwards to the model)."""
    wrapper = torch.nn.Module()
    wrapper.forward = model.forward
    wrapper.train(model.training)
    return type(trainer).training_step(trainer, wrapper, inputs, num_items_in_batch)


def test_learning_rates_follow_the_schedule(two_stage_run):
    trainer, recorder, _ = two_stage_run
    base, schedule = trainer.args.learning_rate, trainer.schedule
    for step, lrs in recorder.lrs.items():
        for name, lr in lrs.items():
            assert lr == pytest.approx(base * schedule.lr_factor(name.split(".")[0], step)), (step, name)
    assert recorder.lrs[0]["speech.decay"] == pytest.approx(base * 5.0)  # warm-up 1/2 of the 10x peak
    assert recorder.lrs[1]["speech.decay"] == pytest.approx(base * 10.0)
    assert recorder.lrs[3]["speech.decay"] == pytest.approx(base * 5.0)  # decay over the last 2 steps
    assert recorder.lrs[STAGE1]["speech.decay"] == pytest.approx(base)
    # the backbone by the square-root rule: 64 ids x BATCH per step
    assert recorder.lrs[STAGE1]["backbone.decay"] == pytest.approx(base * math.sqrt(64 * BATCH / PAPER_BATCH_TOKENS))


def test_losses_entropy_stage_and_tokens_seen_are_logged(two_stage_run):
    trainer, _, _ = two_stage_run
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == STEPS
    seen = {"text": 0, "speech": 0}
    for entry in logs:
        assert {"layer_weights_entropy", "num_input_tokens_seen"} <= set(entry)
        for modality, before in seen.items():  # a loss is logged exactly when its modality had targets
            assert (f"{modality}_loss" in entry) == (entry[f"{modality}_tokens_seen"] > before)
            seen[modality] = entry[f"{modality}_tokens_seen"]
    assert [entry["stage"] for entry in logs] == [1] * STAGE1 + [2] * (STEPS - STAGE1)
    base = trainer.args.learning_rate
    backbone = base * trainer.schedule.backbone_factor  # the square-root batch rule
    assert [entry["learning_rate_backbone"] for entry in logs] == pytest.approx(
        [0.0] * STAGE1 + [backbone] * (STEPS - STAGE1)
    )
    assert logs[1]["learning_rate_speech"] == logs[1]["learning_rate"] == pytest.approx(10 * base)
    assert logs[0]["text_loss"] > 0 and logs[0]["speech_loss"] > 0
    text_seen = [entry["text_tokens_seen"] for entry in logs]
    speech_seen = [entry["speech_tokens_seen"] for entry in logs]
    assert text_seen == sorted(text_seen) and speech_seen == sorted(speech_seen) and speech_seen[-1] > 0
    assert logs[-1]["num_input_tokens_seen"] == STEPS * BATCH * 64
    # An interval with text targets only: no speech loss (not a 0 that would read as a perfect fit). The shared
    # run's history and token counts are restored afterwards.
    history, tokens_seen = list(trainer.state.log_history), dict(trainer.two_stage.tokens_seen)
    try:
        trainer._parts.zero_()
        trainer._parts[:2] = torch.tensor([6.0, 3.0], dtype=trainer._parts.dtype)  # text CE sum, text targets
        trainer.log({"loss": 2.0})
        assert trainer.state.log_history[-1]["text_loss"] == pytest.approx(2.0)
        assert "speech_loss" not in trainer.state.log_history[-1]
    finally:
        trainer.state.log_history[:] = history
        trainer.two_stage.tokens_seen.update(tokens_seen)


def test_stage1_data_is_interleaved_and_stage2_mixes(two_stage_run):
    trainer, _, _ = two_stage_run
    mixture = trainer.train_dataset
    assert mixture.stage1_samples == STAGE1 * BATCH
    assert {mixture.modality(k) for k in range(STAGE1 * BATCH)} == {"interleaved"}
    assert {mixture.modality(k) for k in range(STAGE1 * BATCH, STEPS * BATCH)} == {"speech", "text", "interleaved"}


def test_resume_equals_straight_training(assets, tmp_path):
    straight = run_training(tiny_training_config(assets, str(tmp_path / "straight")))
    config = tiny_training_config(assets, str(tmp_path / "halves"), save_strategy="steps", save_steps=STEPS // 2)
    first_half = copy.deepcopy(config)
    first_half["training"]["max_steps"] = STEPS // 2
    run_training(first_half)  # stops at the stage switch; the schedule depends on the step only, not max_steps
    checkpoint = tmp_path / "halves" / f"checkpoint-{STEPS // 2}"
    saved = json.loads((checkpoint / STATE_NAME).read_text())
    assert saved["mixture"]["samples_consumed"] == STEPS // 2 * BATCH
    resumed = run_training(config, resume=True)
    assert resumed.state.global_step == STEPS
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(a, b), name
    logs = {e["step"]: e for e in resumed.state.log_history if "loss" in e}
    straight_logs = {e["step"]: e for e in straight.state.log_history if "loss" in e}
    assert logs[STEPS]["speech_tokens_seen"] == straight_logs[STEPS]["speech_tokens_seen"]
    # The final model is saved where from_pretrained finds it.
    reloaded = SmolTolkForCausalLM.from_pretrained(str(tmp_path / "halves"))
    assert torch.equal(reloaded.model.speech_embed_tokens.weight, resumed.model.model.speech_embed_tokens.weight)


def test_resume_refuses_another_data_geometry(assets, tmp_path):
    config = tiny_training_config(assets, str(tmp_path), max_steps=2, save_strategy="steps", save_steps=2)
    run_training(config)
    config["training"].update(max_steps=4, per_device_train_batch_size=BATCH + 1)
    config["stages"]["stage1_steps"] = STAGE1
    with pytest.raises(ValueError, match="Cannot resume"):
        run_training(config, resume=True)


def _write(config: dict, path) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_cli_trains_from_yaml(assets, tmp_path, capsys):
    config = tiny_training_config(assets, str(tmp_path / "out"), max_steps=2)
    config["stages"] = {"stage1_steps": 1, "warmup_steps": 1}
    assert cli_train([_write(config, tmp_path / "train.yaml")]) == 0
    assert SmolTolkForCausalLM.from_pretrained(str(tmp_path / "out")).config.num_speech_units == DATA_NUM_UNITS


@pytest.mark.parametrize(
    "change, where, message",
    [
        (lambda c, a, t: c["data"].update(speech=[str(t / "no_units")]), "data.speech.0 (", "column(s) ['units']"),
        (
            lambda c, a, t: c["data"].update(text=[{"path": "parquet", "data_files": str(t / "empty.parquet")}]),
            "data.text.0 (",
            "no data",
        ),
        (lambda c, a, t: c["data"].update(interleaved=[str(t / "unaligned")]), "data.interleaved.0 (", "no usable"),
        (lambda c, a, t: c["data"].update(context_length=1), "data.speech.0 (", "too short"),
        (lambda c, a, t: c["data"].update(speech=[str(t / "missing")]), "data.speech.0 (", "missing"),
        (lambda c, a, t: c["data"].update(interleaved=[]), "", "stage 1 needs interleaved"),
        (lambda c, a, t: c["training"].pop("max_steps"), "", "max_steps"),
        (lambda c, a, t: c["model"].update(from_pretrained=a["backbone"]), "", "exactly one of"),
        (lambda c, a, t: c.update(optimizer={}), "", "optimizer is not a valid key"),
    ],
)
def test_bad_configs_fail_with_a_clear_message(assets, tmp_path, capsys, change, where, message):
    datasets.Dataset.from_dict({"tokens": [[1, 2, 3]]}).save_to_disk(str(tmp_path / "no_units"))
    make_text_data(3).select([]).to_parquet(str(tmp_path / "empty.parquet"))
    make_speech_data(4, unaligned=4)[0].save_to_disk(str(tmp_path / "unaligned"))
    config = tiny_training_config(assets, str(tmp_path / "out"))
    change(config, assets, tmp_path)
    capsys.readouterr()
    assert cli_train([_write(config, tmp_path / "train.yaml")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {where}") and message in error, error
