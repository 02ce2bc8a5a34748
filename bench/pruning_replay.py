"""Replay a full sweep's learning curves through the real pruners: which defaults would work?

Why: bench/pruning.py costs ~20 minutes per pruner setting at full size, too slow to compare
settings. Seeded runs train identically on one machine, so a pruned sweep's trial follows the
full sweep's curve of the same variant up to the epoch it is stopped at. This script reads the
run folders of ONE full sweep (`cnnspec sweep ... --out DIR`, no pruning), then feeds each
variant's history, in the order the sweep trained them, through cnnspec.experiments.pruning
(the same EpochReporter, Optuna study and pruners `--prune` uses, one worker), for every
pruner setting asked for. It prints, per setting, the epochs that would be trained (share of
the full sweep's) and the winner (best final val_accuracy among completed variants) against
the full sweep's. It predicts; bench/pruning.py measures (run it on the setting chosen).

    .venv/bin/python bench/pruning_replay.py DIR                       # a grid of settings
    .venv/bin/python bench/pruning_replay.py DIR --settings "halving:val_accuracy:2:3"

A setting is kind:metric:min_epochs:reduction_factor (kind halving | hyperband | median; for
median the last two are warmup and startup).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from cnnspec.experiments import pruning
from cnnspec.failures import UsageError


@dataclass(frozen=True)
class Variant:
    name: str
    started: str  # settings.json's "created": when the sweep started it
    history: list[dict]

    @property
    def final(self) -> float | None:
        return self.history[-1].get("val_accuracy") if self.history else None


def read_sweep(folder: Path) -> list[Variant]:
    """The full sweep's variants in the order it trained them (by the time each started)."""
    out = []
    for settings_path in folder.glob("*/settings.json"):
        run = settings_path.parent
        settings = json.loads(settings_path.read_text())
        history = json.loads((run / "history.json").read_text())
        started = settings.get("created") or str(settings_path.stat().st_mtime_ns)
        out.append(Variant(settings["spec"]["name"], started, history))
    return sorted(out, key=lambda v: v.started)


# history columns a what-if may judge by beyond --prune-metric's choices (training accuracy and
# loss, which are not comparable across runs with different augmentation or regularisers)
WHAT_IF_METRICS = {"accuracy": True, "loss": False}


def parse_setting(text: str, epochs: int) -> pruning.PrunerConfig:
    kind, metric, a, b = text.split(":")
    if metric not in pruning.METRICS and metric in WHAT_IF_METRICS:
        pruning.METRICS[metric] = WHAT_IF_METRICS[metric]  # this process only: a what-if
    if kind == "median":
        return pruning.PrunerConfig(kind=kind, metric=metric, warmup=int(a), startup=int(b),
                                    max_epochs=epochs)
    return pruning.PrunerConfig(kind=kind, metric=metric, min_resource=int(a), eta=int(b),
                                max_epochs=epochs)


def replay(variants: list[Variant], config: pruning.PrunerConfig) -> list[tuple[str, int, str]]:
    """(variant, epochs trained, state) of each variant, as one pruned sweep would train them."""
    study = pruning.local_study(config, name="replay")
    out = []
    for v in variants:
        reporter = pruning.begin(study, v.name, config, epochs=len(v.history))
        trained = 0
        for row in v.history:
            trained += 1
            if reporter(row["epoch"], row) is not None:
                break
        value = v.history[trained - 1].get("val_accuracy")
        out.append((v.name, trained, pruning.finish(study, reporter, value)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the run folders of one full (unpruned) sweep")
    p.add_argument("--settings", nargs="*", default=[
        f"halving:{m}:{r}:{e}" for m in ("val_accuracy", "val_loss") for r in (1, 2)
        for e in (2, 3, 4)] + ["hyperband:val_accuracy:1:3", "median:val_accuracy:1:3",
                               "median:val_accuracy:2:3"])
    args = p.parse_args(argv)
    variants = read_sweep(args.folder)
    if not variants:
        raise SystemExit(f"no run folders in {args.folder}")
    epochs = max(len(v.history) for v in variants)
    full_epochs = sum(len(v.history) for v in variants)
    finals = {v.name: v.final for v in variants}
    best = max(variants, key=lambda v: v.final or 0.0)
    print(f"{len(variants)} variants, {full_epochs} epochs; full sweep's winner {best.name} "
          f"{(best.final or 0) * 100:.1f} %")
    print(f"{'setting':32} {'epochs':>6} {'share':>6} {'winner':>8} {'gap':>6}  winner")
    for text in args.settings:
        try:
            config = parse_setting(text, epochs)
            runs = replay(variants, config)
        except (UsageError, ValueError) as exc:  # e.g. min_epochs 2 in a sweep of 2 epochs
            print(f"{text:32} {'not for this sweep: ' + str(exc).splitlines()[0]}")
            continue
        trained = sum(n for _, n, _ in runs)
        done = [(name, finals[name]) for name, _, state in runs if state == "completed"]
        name, value = max(done, key=lambda x: x[1] or 0.0)
        gap = ((best.final or 0) - (value or 0)) * 100
        verdict = ("met" if trained / full_epochs <= 0.40 and gap <= 1.0 + 1e-9 else "-")
        print(f"{text:32} {trained:6} {100 * trained / full_epochs:5.1f}% "
              f"{(value or 0) * 100:7.1f}% {-gap + 0.0:+6.1f}  {name}  [{verdict}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
