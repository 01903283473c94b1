"""Where a training run's outputs are, which checkpoints are complete, and what a new run may replace.

A checkpoint folder `checkpoint-N` is complete once `smoltolk_state.json` is in it: `TwoStageCallback.on_save`
writes that file last (under a temporary name, then renamed), after the Trainer has written the model, optimizer,
scheduler, RNG and trainer state. A folder without it was being written when the run stopped.
"""

from __future__ import annotations

import os
import re
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .callback import STATE_NAME

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# Files a finished run leaves in its output folder (the final model and the Trainer's state).
_FINAL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "trainer_state.json")


def checkpoint_folders(output_dir: str | os.PathLike) -> list[str]:
    """The `checkpoint-N` folders of `output_dir`, newest (largest N) first."""
    if not os.path.isdir(output_dir):
        return []
    steps = [
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    ]
    return [os.path.join(output_dir, name) for _, name in sorted(steps, reverse=True)]


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """Whether `checkpoint` was written to the end (its completion marker, `smoltolk_state.json`, is there)."""
    return os.path.isfile(os.path.join(checkpoint, STATE_NAME))


def last_complete_checkpoint(output_dir: str | os.PathLike) -> tuple[str | None, list[str]]:
    """The newest complete checkpoint of `output_dir` (or None), and the newer incomplete ones it passed over."""
    skipped = []
    for folder in checkpoint_folders(output_dir):
        if is_complete(folder):
            return folder, skipped
        skipped.append(folder)
    return None, skipped


def previous_run(output_dir: str | os.PathLike) -> list[str]:
    """What a training run left in `output_dir` (final model files and checkpoint folders); empty if nothing."""
    if not os.path.isdir(output_dir):
        return []
    final = [name for name in _FINAL_FILES if os.path.isfile(os.path.join(output_dir, name))]
    return final + [os.path.basename(folder) for folder in checkpoint_folders(output_dir)]


def check_output_dir(output_dir: str | os.PathLike, resume: str | bool, overwrite: bool) -> None:
    """Refuses to start a new run (no `resume`) in the folder of another run unless `overwrite` is set.

    Raises:
        FileExistsError: `output_dir` holds a run's model or checkpoints, and neither `resume` nor `overwrite`.
        ValueError: both `resume` and `overwrite`.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in output_dir and --overwrite replaces it: pass one of them.")
    found = previous_run(output_dir)
    if found and not resume and not overwrite:
        shown = ", ".join(found[:6]) + (" ..." if len(found) > 6 else "")
        raise FileExistsError(
            f"training.output_dir {os.fspath(output_dir)!r} already holds a training run ({shown}); a new run there "
            "would replace its model and, with save_total_limit, delete its checkpoints. Continue it with --resume, "
            "choose another output_dir (--training.output_dir DIR), or pass --overwrite to replace it."
        )


def remove_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """Deletes the `checkpoint-N` folders of `output_dir` (a run started with `--overwrite`), so that a later
    `--resume` cannot pick up the replaced run's checkpoints; returns what it deleted."""
    folders = checkpoint_folders(output_dir)
    for folder in folders:
        shutil.rmtree(folder)
    return folders
