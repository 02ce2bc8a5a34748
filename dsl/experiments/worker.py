"""One worker of a study: pull a trial, train its variant, record the result; until none is left.

A worker pops WAITING trials itself (the same loop as Optuna's `Study.ask`, through public
storage methods) so that one finding the queue empty stops: `ask()` would have the sampler
invent a new, non-enqueued trial. Before each pop and while idle it fails stale trials (and
the one worker whose FAIL succeeds re-queues them). With TPE a sampled variant is claimed by
writing it to the trial and then reading the study (write-then-read: two workers can both back
off, never both train); a backed-off sample is a PRUNED duplicate (user attr `duplicate_of`)
and its slot is replaced.

Pruned sweeps (`pruner`, a `pruning.PrunerConfig`): the worker attaches the pruner to its study,
gives the trainer an epoch hook (`pruning.EpochReporter`) that reports the metric after every
epoch and stops the run when the pruner says so; such a trial is recorded PRUNED with the why
(user attr `pruned`, `pruning.record_pruned`), its history in `partial`. PRUNED is final, so it
is never failed as stale nor re-queued; and its history is never a `result` (the commit point
a re-queued copy would be told as a completed value).
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnspec.experiments import pruning
from cnnspec.experiments.definition import SweepDef
from cnnspec.experiments.heartbeat import Heartbeat
from cnnspec.experiments.queue import S_RETRY_OF, quiet_optuna, requeue
from cnnspec.experiments.results import Trainer, completed_folder, result_record
from cnnspec.language.sweep import Variant, canonical_labels
from cnnspec.training.records import safe_name


class Interrupted(Exception):
    """Ctrl-C or SIGTERM while this worker held a trial; the trial is already re-queued."""


class Worker:
    """Pulls trials from one study until none is waiting or running, training each variant."""

    def __init__(self, study: Any, storage: Any, sweep: SweepDef, trainer: Trainer,
                 runs_base: Path, say: Callable[[str], None] = lambda _: None,
                 settings: Callable[[Variant], dict[str, Any]] = lambda _: {},
                 pruner: pruning.PrunerConfig | None = None) -> None:
        self.study, self.storage, self.sweep = study, storage, sweep
        # None: the trainer is called without epoch hooks (as before pruned sweeps existed)
        self.pruner = pruner
        if pruner is not None:
            pruning.attach(study, pruner)
        self.trainer, self.runs_base, self.say, self.settings = trainer, runs_base, say, settings
        self.optuna = quiet_optuna()
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.by_labels = sweep.by_labels()
        self.by_name = {v.name: v for v in sweep.variants}
        self.trained: list[str] = []  # variant names this worker trained
        self.pruned: list[str] = []  # ... of which the pruner stopped these
        self.recorded = 0  # trials this worker finished (trained, recovered or duplicates)
        self._result: dict[str, Any] | None = None  # the trial's result once training ended

    # the loop -------------------------------------------------------------------------------

    def run(self, poll: float | None = None) -> None:
        """Work until the study has nothing waiting and nothing running (a running trial may
        still be lost and re-queued, so an idle worker waits for it)."""
        poll = poll or float(self.storage.get_heartbeat_interval() or 1)
        waiting_said = False
        while True:
            self.fail_stale()
            popped = self.pop()
            if popped is not None:
                waiting_said = False
                self.run_trial(*popped)
                continue
            running = self.study.get_trials(deepcopy=False,
                                            states=(self.optuna.trial.TrialState.RUNNING,))
            if not running:
                return
            if not waiting_said:
                grace = getattr(self.storage, "grace_period", None)
                self.say(f"nothing left to start; waiting for {len(running)} running trial(s) "
                         f"on other workers (a lost one is re-queued after {grace}s)")
                waiting_said = True
            time.sleep(poll)

    def fail_stale(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.optuna.storages.fail_stale_trials(self.study)

    def pop(self) -> tuple[int, Any] | None:
        """Take one WAITING trial: the first beat, then WAITING -> RUNNING, which succeeds for
        exactly one worker. Beating first closes the gap in which a worker that died right
        after the pop would hold a RUNNING trial without a beat (never detected as stale)."""
        TrialState = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                self.storage.record_heartbeat(t._trial_id)
                if self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    return t._trial_id, t
            except (self.optuna.exceptions.UpdateFinishedTrialError, KeyError):
                continue
        return None

    # one trial ------------------------------------------------------------------------------

    def run_trial(self, trial_id: int, frozen: Any) -> None:
        beat = Heartbeat(self.storage, trial_id,
                          float(self.storage.get_heartbeat_interval() or 30)).start()
        try:
            self._run_trial(trial_id, frozen, beat)
        except Interrupted:
            raise  # already back in the queue
        except (self.optuna.exceptions.UpdateFinishedTrialError, ValueError) as exc:
            # a write to a trial that others failed as stale: UpdateFinishedTrialError, or
            # tell's "Cannot tell a FAIL trial"
            beat.stop()
            current = self.storage.get_trial(trial_id)
            if current.state != self.optuna.trial.TrialState.FAIL or (
                    isinstance(exc, ValueError) and "Cannot tell" not in str(exc)):
                self.give_back(trial_id)
                raise
            self.handle_lost(current, self._result or current.user_attrs.get("result"))
        except BaseException:
            # Ctrl-C, SIGTERM, or an error that ends this worker: the trial goes back to the
            # queue now rather than after the grace period
            beat.stop()
            self.give_back(trial_id)
            raise
        finally:
            beat.stop()

    def _suggest(self, trial: Any) -> tuple[str, ...]:
        return tuple(trial.suggest_categorical(p.key, list(p.labels)) for p in self.sweep.points)

    def _run_trial(self, trial_id: int, frozen: Any, beat: Heartbeat) -> None:
        """One popped trial: its variant, then a duplicate (TPE), a result recovered from a
        lost worker, or training."""
        self._result: dict[str, Any] | None = None
        trial = self.optuna.Trial(self.study, trial_id)
        labels = self._suggest(trial)
        # TPE picks every point; a choice inside a part the variant leaves out is no other one
        variant = self.by_labels.get(canonical_labels(self.sweep.spec, self.sweep.points,
                                                      labels))
        if variant is None:
            self._fail(trial, beat, f"parameters {labels} are not a variant of this sweep")
            return
        attrs = frozen.user_attrs
        if self.sweep.search == "tpe" and self._duplicate(trial, variant, attrs, beat):
            return
        recovered = self._recovered(attrs)
        if recovered is not None:
            self._record_recovered(trial, beat, variant, frozen, *recovered)
            return
        self._train(trial, trial_id, beat, variant, attrs)

    def _recovered(self, attrs: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """A re-queued trial's result that needs no training, and where it came from: the one
        its lost worker recorded, else one of its attempts' run folders that completed."""
        recorded = attrs.get("result")
        if recorded is not None:
            return (recorded, "recorded by the lost worker") \
                if recorded.get("value") is not None else None
        for attempt in reversed(attrs.get("attempts", [])):
            recorded = completed_folder(attempt.get("run_dir"))
            if recorded is not None and recorded["value"] is not None:
                return recorded, f"read from its completed run folder {attempt['run_dir']}"
        return None

    def _record_recovered(self, trial: Any, beat: Heartbeat, variant: Variant, frozen: Any,
                          recorded: dict[str, Any], source: str) -> None:
        """A lost trial whose variant did finish: record it, don't train it again."""
        lost = frozen.system_attrs.get(S_RETRY_OF, [])
        self.say(f"trial {trial.number} {variant.name}: finished before its worker was lost "
                 f"(trial {lost[-1] if lost else '?'}); result {source}")
        if "result" not in frozen.user_attrs:
            self._set(trial, "result", recorded)
        self._set(trial, "recovered_from", lost[-1] if lost else None)
        if recorded.get("run_dir"):
            self._set(trial, "run_dir", recorded["run_dir"])
        self._tell(trial, beat, recorded)

    def _train(self, trial: Any, trial_id: int, beat: Heartbeat, variant: Variant,
               attrs: dict[str, Any]) -> None:
        """Train the variant into a run folder of its own and record what came of it."""
        number = trial.number
        run_dir = self.runs_base / f"{safe_name(variant.name)}-t{number}"
        n_params, macs = self.sweep.models.get(variant.name, (None, None))
        settings = self.settings(variant)
        self._set(trial, "run_dir", str(run_dir.resolve()))
        self._set(trial, "worker", {"id": self.id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "n_params": n_params, "macs": macs, **settings})
        if "variant" not in attrs:
            self._set(trial, "variant", variant.name)
        self.say(f"trial {number}: {variant.name} on {self.id} -> {run_dir}")
        reporter = None
        if self.pruner is None:
            outcome = self.trainer(variant, run_dir)
        else:
            epochs = settings.get("epochs")
            reporter = pruning.EpochReporter(
                trial, self.pruner, epochs if isinstance(epochs, int) else None)
            outcome = self.trainer(variant, run_dir, epoch_hooks=[reporter])
        where = outcome.run_dir or run_dir
        if outcome.status == "interrupted":
            beat.stop()
            self.give_back(trial_id)
            raise Interrupted(f"interrupted during trial {number} ({variant.name}); "
                              "it is back in the queue for any worker")
        if outcome.status == "pruned" and reporter is not None and reporter.decision is not None:
            self.trained.append(variant.name)
            self.pruned.append(variant.name)
            self._set(trial, "partial", result_record(outcome.history, outcome.metrics, where))
            beat.stop()
            pruning.record_pruned(self.study, trial, reporter.decision)
            self.recorded += 1
            self.say(f"trial {number} {variant.name} pruned after epoch "
                     f"{reporter.decision.epoch}: {reporter.decision.reason}")
            return
        if outcome.status != "completed":
            self.trained.append(variant.name)
            self._set(trial, "partial", result_record(outcome.history, outcome.metrics, where))
            self._fail(trial, beat, outcome.reason or "training failed")
            return
        result = result_record(outcome.history, outcome.metrics, where)
        if result["value"] is None:
            self._fail(trial, beat, "no validation or test accuracy to score the variant by")
            return
        self.trained.append(variant.name)
        self._result = result
        self._set(trial, "result", result)  # the commit point: a re-queued copy reuses it
        self._tell(trial, beat, result)

    def _duplicate(self, trial: Any, variant: Variant, attrs: dict[str, Any],
                   beat: Heartbeat) -> bool:
        """TPE: claim the variant, or record this sample as a duplicate (write, then read)."""
        TrialState = self.optuna.trial.TrialState
        self._set(trial, "variant", variant.name)
        holders = [
            t for t in self.study.get_trials(
                deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE,
                                        TrialState.PRUNED))
            if t.number != trial.number and t.user_attrs.get("variant") == variant.name
            and "duplicate_of" not in t.user_attrs
        ]
        if not holders:
            return False
        done = [t for t in holders if t.state == TrialState.COMPLETE]
        first = (done or holders)[0]
        self._set(trial, "duplicate_of", first.number)
        chain = int(attrs.get("dup_chain", 0)) + 1
        self._replace_slot(chain)
        beat.stop()
        self.study.tell(trial, state=TrialState.PRUNED)
        self.recorded += 1
        self.say(f"trial {trial.number}: TPE proposed {variant.name} again (trial {first.number});"
                 " not trained")
        return True

    def _replace_slot(self, chain: int) -> None:
        """Give back the budget a duplicate used: a new slot, unless every variant is taken.
        After two duplicates in a row the slot is fixed to a random untaken variant."""
        TrialState = self.optuna.trial.TrialState
        taken = {t.user_attrs.get("variant") for t in self.study.get_trials(deepcopy=False)
                 if t.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING,
                                TrialState.PRUNED)
                 and "duplicate_of" not in t.user_attrs}
        free = [v for v in self.sweep.variants if v.name not in taken]
        if not free:
            return
        params: dict[str, Any] = {}
        attrs: dict[str, Any] = {"slot": "replacement", "dup_chain": chain}
        if chain >= 2:
            pick = random.choice(free)
            params = dict(pick.choices)
            attrs["variant"] = pick.name
        self.study.enqueue_trial(params, user_attrs=attrs)

    def _set(self, trial: Any, key: str, value: Any) -> None:
        trial.set_user_attr(key, value)

    def _fail(self, trial: Any, beat: Heartbeat, reason: str) -> None:
        self._set(trial, "failure", reason)
        beat.stop()
        self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        self.recorded += 1
        self.say(f"trial {trial.number} failed: {reason.splitlines()[0]}")

    def _tell(self, trial: Any, beat: Heartbeat, result: dict[str, Any]) -> None:
        beat.stop()
        self.study.tell(trial, result["value"])
        self.recorded += 1

    def give_back(self, trial_id: int) -> None:
        """Put a trial this worker holds back in the queue now (Ctrl-C, SIGTERM), instead of
        leaving it to be found stale after the grace period. The FAIL is the same
        compare-and-set as stale detection, so at most one re-queue happens."""
        TrialState = self.optuna.trial.TrialState
        try:
            if self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                requeue(self.study, self.storage.get_trial(trial_id))
        except self.optuna.exceptions.UpdateFinishedTrialError:
            pass

    def handle_lost(self, trial: Any, result: dict[str, Any] | None) -> None:
        """This worker's trial was declared lost while it was alive (no beat reached the storage
        for the grace period) and re-queued. Hand a finished result to the re-queued copy if no
        one has started it; otherwise the variant is being trained again elsewhere."""
        TrialState = self.optuna.trial.TrialState
        if result is not None:
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                if trial.number in t.system_attrs.get(S_RETRY_OF, []):
                    try:
                        if not self.storage.set_trial_state_values(t._trial_id,
                                                                   state=TrialState.RUNNING):
                            break
                    except self.optuna.exceptions.UpdateFinishedTrialError:
                        break
                    copy = self.optuna.Trial(self.study, t._trial_id)
                    self._suggest(copy)  # its fixed parameters, for the record
                    copy.set_user_attr("result", result)
                    copy.set_user_attr("run_dir", result.get("run_dir"))
                    copy.set_user_attr("recovered_from", trial.number)
                    self.study.tell(copy, result["value"])
                    self.say(f"trial {trial.number} had been declared lost; its result went to "
                             f"its re-queued copy, trial {copy.number}")
                    return
        self.say(f"trial {trial.number} had been declared lost (no heartbeat reached the storage "
                 "for the grace period) and re-queued; the copy is trained by whichever worker "
                 "takes it" + ("" if result is None else ", and this worker's result, already "
                 f"in {result.get('run_dir')}, is not recorded"))

