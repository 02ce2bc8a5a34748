"""What every worker of one study must agree on: the variants, the search and the flags.

`sweep_def` expands and checks every variant before anything is stored or trained. It takes
plain values (`SweepOptions`), not the command line's Namespace: the CLI turns its flags into
options, and a benchmark or a test builds them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cnnspec.failures import UsageError
from cnnspec.language import ir
from cnnspec.language.format import format_spec
from cnnspec.language.settings import STUDY_FLAGS, flag_record
from cnnspec.language.sweep import (
    DEFAULT_MAX_VARIANTS,
    Point,
    Variant,
    check_all_variants,
    expand,
    sweep_points,
)

# The study's "same flags" check: the training settings every worker must train with. They are
# stored in the study (A_CONFIG) by its creator, and a joining worker whose values differ is
# refused. They are the settings with a command-line flag in the table of settings.
TRAIN_FLAGS = STUDY_FLAGS
# ... and with them the flags that choose the variants
CONFIG_FLAGS = (*TRAIN_FLAGS, "max_params", "sample", "sample_seed")


@dataclass(frozen=True)
class SweepOptions:
    """How to turn a sweep spec into a study: the search, the variants taken, the training
    settings (`train`, keyed by TRAIN_FLAGS; a missing one is None, i.e. the spec's own) and
    the pruning (`prune`, the PrunerConfig as `pruning.config_record` gives it)."""

    search: str = "grid"
    trials: int | None = None
    sample: int | None = None
    sample_seed: int = 0
    max_variants: int = DEFAULT_MAX_VARIANTS
    max_params: int | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    prune: Mapping[str, Any] | None = None  # pruning.config_record(...), None: not pruned

    def config(self) -> dict[str, Any]:
        """The values of CONFIG_FLAGS, with the search: what the study records and compares."""
        own = {"max_params": self.max_params, "sample": self.sample,
               "sample_seed": self.sample_seed}
        config = {k: own[k] if k in own else flag_record(k, self.train.get(k))
                  for k in CONFIG_FLAGS}
        config.update(search=self.search, trials=self.trials)
        if self.prune is not None:  # every worker attaches its own pruner: they must agree
            config["prune"] = dict(self.prune)
        return config


@dataclass(frozen=True)
class SweepDef:
    """What every worker of one study must agree on."""

    spec: ir.Spec
    variants: tuple[Variant, ...]
    points: tuple[Point, ...]
    search: str
    trials: int
    config: dict[str, Any]
    text: str
    models: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (params, MACs)

    def by_labels(self) -> dict[tuple[str, ...], Variant]:
        return {tuple(label for _, label in v.choices): v for v in self.variants}


def sweep_def(spec: ir.Spec, options: SweepOptions) -> SweepDef:
    """Expand and check every variant (before anything is stored or trained)."""
    search, trials, sample = options.search, options.trials, options.sample
    if search == "grid" and trials is not None:
        raise UsageError("--trials applies to --search tpe; a grid trains every variant "
                         "(take fewer with --sample K)")
    if search == "tpe" and sample is not None:
        raise UsageError("--sample applies to grid sweeps; --search tpe samples with --trials N")
    if search == "tpe" and trials is None:
        raise UsageError("--search tpe needs --trials N (how many variants to train)")
    variants = expand(spec, max_variants=options.max_variants, sample=sample,
                      seed=options.sample_seed)
    kw = {} if options.max_params is None else {"max_params": options.max_params}
    reports = check_all_variants(spec, max_variants=options.max_variants, sample=sample,
                                 seed=options.sample_seed, **kw)
    models = {r.name: (r.params, r.macs) for r in reports}
    n = len(variants) if search == "grid" else min(trials or 0, len(variants))
    return SweepDef(spec, tuple(variants), tuple(sweep_points(spec)), search, n,
                    options.config(), format_spec(spec), models)
