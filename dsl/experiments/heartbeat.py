"""Heartbeats: a running trial beats so that a lost worker's trial is found and re-queued.

Optuna beats only inside `Study.optimize`, which the worker does not use, so `Heartbeat` beats
on a thread of its own. JournalStorage has no heartbeat in Optuna; `journal_storage_class` adds
one: the beat is a trial system attr, and a trial is stale when its beat has not *changed* for
the grace period as seen by the checking worker's own monotonic clock (no clock agreement
between machines).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any

from cnnspec.experiments.queue import S_BEAT, requeue

DEFAULT_HEARTBEAT = 30  # seconds between beats of a running trial
GRACE_BEATS = 4  # default grace period: this many missed beats


class Heartbeat:
    """Beats for one trial on a daemon thread; a failed beat (storage unreachable) is retried at
    the next interval, so a short outage does not lose the trial."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"cnnspec-heartbeat-{trial_id}")

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@functools.cache
def journal_storage_class() -> Any:
    """JournalStorage with a heartbeat (made once, on first use: optuna is imported lazily)."""
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class _JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):  # type: ignore[misc]
        """A beat is a trial system attr (the time, for people); a trial is stale when its attr
        has not changed for `grace` seconds of *this* process's monotonic clock, so machines
        need not agree on the time. A newly seen trial is watched a full grace period first."""

        def __init__(self, backend: Any, heartbeat: int | None, grace: int | None) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat
            self.grace_period = grace
            self._seen: dict[int, tuple[Any, float]] = {}

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, S_BEAT, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.monotonic()
            grace = self.grace_period or 2 * (self.heartbeat_interval or 1)
            stale, seen = [], {}
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = t.system_attrs.get(S_BEAT)
                last = self._seen.get(t._trial_id)
                seen[t._trial_id] = last if last is not None and last[0] == beat else (beat, now)
                if now - seen[t._trial_id][1] > grace:
                    stale.append(t._trial_id)
            self._seen = seen
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> Any:
            return requeue if self.heartbeat_interval is not None else None

    return _JournalHeartbeatStorage
