"""Loss normalisation: one optimizer step does not depend on how its global batch is split.

With `entropy_beta > 0` and padded batches (so that per-micro-batch means differ from global ones), one SGD step
of `SmolTolkTrainer` over 4 samples as 1 x 4, 2 x 2 and 4 x 1 accumulated micro-batches, and as 2 processes x 2
(gloo, `tests/test_distributed.py` style launch), equals one SGD step on the model's plain loss of the whole batch.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import GLOBAL_BATCH, entropy_model, one_sgd_step, padded_examples, reference_sgd_step
from transformers import TrainingArguments

from smoltolk_hf.data.collator import SmolTolkDataCollator
from smoltolk_hf.modeling_smoltolk import loss_normalizers
from smoltolk_hf.training import TwoStageSchedule
from smoltolk_hf.training.trainer import SmolTolkTrainer

TOLERANCE = 1e-6


def max_difference(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> float:
    return max((p.detach() - expected[name]).abs().max().item() for name, p in model.named_parameters())


@pytest.fixture(scope="module")
def setup():
    model = entropy_model()
    examples = padded_examples(model.config)
    return model, examples, reference_sgd_step(copy.deepcopy(model), examples)


@pytest.fixture(scope="module")
def plain_loss(setup) -> float:
    model, examples, _ = setup
    return model(**SmolTolkDataCollator(model.config)(examples)).loss.item()


def test_plain_forward_loss_is_the_per_batch_rule(setup):
    model, examples, _ = setup
    batch = SmolTolkDataCollator(model.config)(examples)
    out = model(**batch, output_layer_weights=True)
    omega = out.layer_weights
    entropy = -(omega * omega.log()).sum(-1)[batch["attention_mask"].bool()]
    targets, positions = loss_normalizers(model.config, batch["labels"], batch["attention_mask"])
    assert positions == entropy.numel() and targets == out.num_text_targets + out.num_speech_targets
    ce = out.text_loss * out.num_text_targets + out.speech_loss * out.num_speech_targets
    torch.testing.assert_close(out.loss, ce / targets - 0.5 * entropy.mean(), rtol=1e-6, atol=1e-6)
    # Global counts turn the batch's loss into its share of a larger batch's loss.
    share = model(**batch, num_items_in_batch=3 * targets, num_positions_in_batch=3 * positions).loss
    torch.testing.assert_close(share, out.loss / 3, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("accumulation", [1, 2, 4])
def test_gradient_accumulation_gives_the_step_of_one_batch(setup, plain_loss, accumulation, tmp_path):
    model, examples, expected = setup
    trainer = one_sgd_step(copy.deepcopy(model), examples, str(tmp_path), GLOBAL_BATCH // accumulation, accumulation)
    assert trainer.state.global_step == 1
    assert max_difference(trainer.model, expected) <= TOLERANCE
    assert trainer.state.log_history[0]["loss"] == pytest.approx(plain_loss, rel=1e-6)  # the logged loss is it too


WORKER = """
import json, os, sys
sys.path.insert(0, sys.argv[2])
from helpers import GLOBAL_BATCH, entropy_model, one_sgd_step, padded_examples

model = entropy_model()
accumulation = int(sys.argv[3])
per_device = GLOBAL_BATCH // 2 // accumulation
trainer = one_sgd_step(model, padded_examples(model.config), sys.argv[1], per_device, accumulation)
weights = {name: p.detach().tolist() for name, p in trainer.model.named_parameters()}
with open(os.path.join(sys.argv[1], f"rank{trainer.args.process_index}.json"), "w") as f:
    json.dump(dict(world_size=trainer.args.world_size, weights=weights), f)
"""


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_processes_give_the_step_of_one_batch(setup, accumulation, tmp_path):
    model, _, expected = setup
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    tests = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run(
        [*command, str(tmp_path / "worker.py"), str(tmp_path), tests, str(accumulation)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["world_size"] == 2
        difference = max((torch.tensor(w) - expected[name]).abs().max().item() for name, w in report["weights"].items())
        assert difference <= TOLERANCE, (rank, difference)


class DataParallelArguments(TrainingArguments):
    """Arguments as the Trainer sees them on a 2-GPU machine without a launcher (torch DataParallel)."""

    @property
    def n_gpu(self) -> int:
        return 2


def test_data_parallel_is_refused_with_a_clear_message(setup, tmp_path):
    model, examples, _ = setup
    args = DataParallelArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="one process per GPU"):
        SmolTolkTrainer(
            model=model,
            args=args,
            train_dataset=examples,
            data_collator=SmolTolkDataCollator(model.config),
            schedule=TwoStageSchedule(stage1_steps=0, warmup_steps=0),
        )
