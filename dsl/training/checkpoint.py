"""The end-of-epoch checkpoint of a run folder: writing it, checking it, loading it back.

A checkpoint is checkpoint/epoch-N.keras (model + optimizer state) and checkpoint/state.json
naming it, with the history so far and the dropout RNG states (Keras does not save those in
.keras files). state.json is written last and atomically, so it is the one record that says
which epoch a run has reached: `--resume`, Ctrl-C and `evaluate` all go by it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from cnnspec.language.errors import some
from cnnspec.training import plots, records


class ResumeRefused(records.RunFolderError):
    """`--resume` with a different spec, settings, precision or data than the run started with."""


def _seed_variables(model: Any) -> list[Any]:
    """The dropout layers' RNG state variables, in layer order."""
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


def seed_states(model: Any) -> list[list[int]]:
    """Dropout RNG states (Keras does not save them in .keras files)."""
    return [[int(x) for x in v.numpy().tolist()] for v in _seed_variables(model)]


def restore_seed_states(model: Any, states: list[list[int]]) -> None:
    variables = _seed_variables(model)
    if len(variables) != len(states):
        raise ValueError(
            f"checkpoint has {len(states)} RNG states, the model has {len(variables)}"
        )
    for var, state in zip(variables, states, strict=True):
        var.assign(np.asarray(state, dtype=var.dtype))


def copy_state(source: Any, target: Any) -> None:
    """Weights, RNG states and optimizer state of `source` into the same model `target`."""
    pairs = [(list(source.variables), list(target.variables)),
             (list(source.optimizer.variables), list(target.optimizer.variables))]
    for src, dst in pairs:
        if len(src) != len(dst):
            raise ValueError(f"checkpoint has {len(src)} variables where the model has {len(dst)}")
        for a, b in zip(src, dst, strict=True):
            if tuple(a.shape) != tuple(b.shape):
                raise ValueError(f"checkpoint variable {a.path} {a.shape} does not fit {b.path}")
            b.assign(a.value)


def write_checkpoint(run_dir: Path, model: Any, history: list[dict[str, Any]], seed: int,
                     ) -> None:
    """The end-of-epoch checkpoint: model file first, then the state naming it (atomically)."""
    name = records.checkpoint_model_name(len(history))
    with records.atomic_path(records.checkpoint_dir(run_dir) / name) as tmp:
        model.save(tmp)
    records.write_checkpoint_state(run_dir, {
        "epochs_completed": len(history),
        "model": name,
        "history": history,
        "seed_states": seed_states(model),
        "effective_seed": seed,
    })
    records.prune_checkpoints(run_dir, keep=name)


def keep_best(run_dir: Path, model: Any, epoch: int) -> None:
    """checkpoint/best.npz: the weights (all of them, batch-norm statistics too) of `epoch`,
    the best so far for early stopping, with its number. Written atomically before that
    epoch's checkpoint, so a resumed run never has a checkpoint newer than a best it lacks."""
    import io

    buffer = io.BytesIO()
    np.savez(buffer, epoch=np.int64(epoch),
             **{f"w{i:04d}": w for i, w in enumerate(model.get_weights())})
    records.checkpoint_dir(run_dir).mkdir(parents=True, exist_ok=True)
    records.atomic_write_bytes(records.checkpoint_dir(run_dir) / records.BEST_WEIGHTS,
                               buffer.getvalue())


def restore_best(run_dir: Path, model: Any) -> int | None:
    """Put checkpoint/best.npz's weights into `model`; the epoch they are from, or None when
    there is none (no epoch had a finite value to be best on)."""
    path = records.checkpoint_dir(run_dir) / records.BEST_WEIGHTS
    if not path.is_file():
        return None
    weights, epoch = _read_best(path)
    model.set_weights(weights)
    return epoch


def _read_best(path: Path) -> tuple[list[np.ndarray], int]:
    """best.npz's weights and epoch, or RunFolderError naming the file: a damaged one gave a
    traceback after the whole resumed run had trained, and marked it failed."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            weights = [saved[f"w{i:04d}"] for i in range(len(saved.files) - 1)]
            epoch = int(saved["epoch"])
    except Exception as exc:  # noqa: BLE001 - np.load raises many kinds for a damaged file
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise records.RunFolderError(
            f"{path}: corrupted record: the best epoch's weights do not load ({why})"
        ) from None
    return weights, epoch


def save_progress(run_dir: Path, history: list[dict[str, Any]], title: str) -> None:
    """history.json/.csv and the learning curve for the epochs so far."""
    records.write_history(run_dir, history)
    plots.write_learning_curve(run_dir / records.CURVE_FILE, history, title=title)


def keep_interrupted(run_dir: Path, title: str) -> list[dict[str, Any]]:
    """After Ctrl-C: make every record describe the last checkpoint; return its history.

    Ctrl-C can land anywhere, including between writing an epoch's model file and the
    state.json that names it, or between the checkpoint and history.json. The checkpoint's
    state.json is the one record that switches atomically, so history, the learning curve,
    model.keras (for `evaluate`) and the status are all rewritten from it, never from the
    epoch count in memory: `evaluate`, `compare` and `--resume` then agree on the epoch.
    """
    state = records.read_checkpoint_state(run_dir)
    if state is None:
        for name in (records.HISTORY_JSON, records.HISTORY_CSV, records.MODEL_FILE):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        return []
    history = list(state["history"])
    records.prune_checkpoints(run_dir, keep=state["model"])
    save_progress(run_dir, history, title)
    records.atomic_copy(records.checkpoint_dir(run_dir) / state["model"],
                        run_dir / records.MODEL_FILE)
    return history


def check_state_record(state: Any, run_dir: Path) -> None:
    """RunFolderError unless checkpoint/state.json names a model file that exists, etc."""
    path = records.checkpoint_dir(run_dir) / records.CHECKPOINT_STATE

    def bad(what: str) -> records.RunFolderError:
        return records.RunFolderError(f"{path}: corrupted record: {what}")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    if not isinstance(state.get("epochs_completed"), int):
        raise bad("'epochs_completed' is missing")
    model = state.get("model")
    if not isinstance(model, str) or "/" in model or not model.endswith(".keras"):
        raise bad("'model' must name the checkpoint's .keras file")
    if not (records.checkpoint_dir(run_dir) / model).is_file():
        raise bad(f"its model file {model} is missing")
    history = state.get("history")
    if (not isinstance(history, list) or len(history) != state["epochs_completed"]
            or not all(isinstance(r, dict) and r.get("epoch") == i + 1
                       for i, r in enumerate(history))):
        raise bad("'history' must hold one row per completed epoch")
    seeds = state.get("seed_states")
    if not isinstance(seeds, list) or not all(
            isinstance(x, list) and all(isinstance(v, int) for v in x) for x in seeds):
        raise bad("'seed_states' must be a list of integer lists")
    best = records.checkpoint_dir(run_dir) / records.BEST_WEIGHTS
    if best.exists() or best.is_symlink():  # read at the very end: checked before training
        _read_best(best)


def load_checkpoint(keras: Any, run_dir: Path, state: dict[str, Any],
                    report: Any = None, policy: str | None = None) -> Any:
    """The checkpoint's model with its dropout RNG states; ResumeRefused naming the file if it
    does not load (damaged, truncated) or does not fit the run (another model's checkpoint:
    its layers, their parameter counts or its precision are not those of the run's `report`
    and dtype `policy`, when given).
    The model gets the training-only speed-ups build_training_model gives a new one (a saved
    model is plain Keras), so a resumed bf16 run computes what an uninterrupted one does."""
    from cnnspec.backend.keras_model import prepare_training

    path = records.checkpoint_dir(run_dir) / state["model"]
    unreadable = records.keras_file_problem(path)
    if unreadable is not None:  # Keras would say "File not found" for a cut-off file
        raise ResumeRefused(f"cannot resume {run_dir}: its checkpoint {path}: {unreadable}; "
                            "the run folder is left as it was")
    try:
        loaded = keras.models.load_model(path)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad .keras file
        raise _does_not_load(run_dir, path, exc) from None
    misfit = model_misfit(loaded, report, policy) if report is not None else None
    if misfit is not None:
        raise ResumeRefused(f"cannot resume {run_dir}: its checkpoint {path} is not this run's "
                            f"model ({misfit}); the run folder is left as it was")
    try:
        model = prepare_training(loaded)
        restore_seed_states(model, state["seed_states"])
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a bad .keras file
        raise _does_not_load(run_dir, path, exc) from None
    return model


def _does_not_load(run_dir: Path, path: Path, exc: Exception) -> ResumeRefused:
    """The refusal for a checkpoint Keras cannot load or prepare, with its first line."""
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return ResumeRefused(
        f"cannot resume {run_dir}: its checkpoint {path} does not load or does not fit "
        f"the run ({why}); the run folder is left as it was")


def model_misfit(model: Any, report: Any, policy: str | None) -> str | None:
    """Why a loaded model is not the one `report` (the run's checked spec) builds under dtype
    `policy` ("float32" or "mixed_bfloat16"), or None: its layers by Keras name and class,
    each one's parameter count, and the precision of its first layer. A checkpoint or
    model.keras copied from another run loaded and trained (or was scored) without a word.
    Layers are matched by name: a graph's order of layers is Keras's, not the spec's."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    found = {layer.name: (type(layer).__name__, layer.count_params()) for layer in layers}
    expected = {row.keras_name: (row.keras_class, row.params) for row in report.rows}
    extra = [name for name in found if name not in expected]
    missing = [name for name in expected if name not in found]
    if extra or missing:
        return (f"it has {some(extra, 3) or 'no other layers'} where the spec has "
                f"{some(missing, 3) or 'no more'}")
    for name, (keras_class, params) in expected.items():
        if found[name][0] != keras_class:
            return f"its {name} is a {found[name][0]}, the spec's a {keras_class}"
        if found[name][1] != params:
            return f"its {name} has {found[name][1]:,} parameters, the spec's {params:,}"
    first = getattr(getattr(layers[0], "dtype_policy", None), "name", None) if layers else None
    if policy is not None and first is not None and first != policy:
        return f"it computes in {first}, the run in {policy}"
    return None


def load_into(keras: Any, run_dir: Path, state: dict[str, Any], model: Any,
              report: Any = None, policy: str | None = None) -> None:
    """The checkpoint copied into an already built `model` (one made in a strategy's scope)."""
    try:
        copy_state(load_checkpoint(keras, run_dir, state, report, policy), model)
    except ResumeRefused:
        raise
    except ValueError as exc:  # copy_state's "does not fit"
        raise ResumeRefused(
            f"cannot resume {run_dir}: its checkpoint does not fit the run ({exc})") from None
