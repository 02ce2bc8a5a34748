"""Data-parallel training for `train`: `--strategy mirrored` and `--strategy multiworker`.

Why a training step of our own instead of `model.fit`: Keras 3's `fit` under
MultiWorkerMirroredStrategy fails (TF 2.21 / Keras 3.15, keras-team/keras#20585: "Attempt to
convert a value (PerReplica…)"). Both strategies share the step below, so they share one code
path; `--strategy none` keeps the plain `model.fit` path untouched.

How a step is split. The spec's batch B is the GLOBAL batch. Step k of epoch e trains on
`epoch_order(seed, e, n)[k*B:(k+1)*B]`, exactly the batch the unsharded run sees; replica g of
the R replicas (g = worker * local_replicas + local index) takes the g-th of R equal slices of
it (B must be divisible by R). The last, short batch of an epoch (m < B images) is split as
evenly as possible. Every worker computes the same order from (seed, epoch), so no data moves
between workers; each reads only its own slices. The loss of a replica is
`sum(per-example loss) / m` (tf.nn.compute_average_loss with the true global batch size m) plus
the regularization losses / R; the optimizer sums the replicas' gradients, so a step's update is
the unsharded mean-loss gradient up to summation order. The learning rate is not scaled.

Only the chief (worker 0, or the single process of `mirrored`) writes the run folder. Workers
take the chief's weights, optimizer state and its `Start` (seed, first epoch, refused, done) by
one collective broadcast at the start (which is also how a resumed run reaches them). Everything
else is the one loop of cnnspec.training.loop: validation is its evaluation, run locally on the
full test split with the same weights on every worker, so all agree without further collectives.
`steps_per_execution` is honoured as under `model.fit`: that many steps run in one graph call.

This module never imports TensorFlow itself: cnnspec.training.train passes `tf` and `keras` in, once
training starts, so the CLI's flag checks (parse_cluster, tf_config) stay instant.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnspec.language.settings import STRATEGIES
from cnnspec.training.data import scale_images

CPU_DEVICES_ENV = "CNNSPEC_CPU_DEVICES"


def replica_slices(n: int, batch: int, replicas: int, worker: int,
                   local: int) -> list[tuple[int, int, int, int]]:
    """(first, count, global batch size, augmentation key) of each slice this worker's `local`
    replicas train on, global batch by global batch, over an epoch of `n` images.

    Global batch k (the last may be short) is split as evenly as it goes over all `replicas`;
    replica g = worker * local + j takes slice g, augmented with key k * replicas + g, so every
    slice of the epoch has its own key whichever worker trains it.
    """
    rows = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        bounds = [start + (g * m) // replicas for g in range(replicas + 1)]
        for j in range(local):
            g = worker * local + j
            rows.append((bounds[g], bounds[g + 1] - bounds[g], m, start // batch * replicas + g))
    return rows


class DistributedError(ValueError):
    """A strategy that cannot be set up as asked; str(exc) is the message for the user."""


def parse_cluster(cluster: str | Sequence[str]) -> list[str]:
    """`host:port,host:port` (or a list of them) as a list of worker addresses."""
    items = cluster.split(",") if isinstance(cluster, str) else list(cluster)
    workers = [item.strip() for item in items if item.strip()]
    if not workers:
        raise DistributedError("--cluster needs at least one host:port")
    for worker in workers:
        host, sep, port = worker.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(f"--cluster: {worker!r} is not host:port")
    if len(set(workers)) != len(workers):
        raise DistributedError("--cluster lists the same host:port twice")
    return workers


def tf_config(cluster: str | Sequence[str], task_index: int) -> dict[str, Any]:
    """The TF_CONFIG that `--cluster C --task-index I` stands for."""
    workers = parse_cluster(cluster)
    if not 0 <= task_index < len(workers):
        raise DistributedError(
            f"--task-index {task_index} is not one of the {len(workers)} workers of --cluster "
            f"(0 to {len(workers) - 1})"
        )
    return {"cluster": {"worker": workers}, "task": {"type": "worker", "index": task_index}}


def split_cpu(tf: Any) -> None:
    """Honour $CNNSPEC_CPU_DEVICES=N: split the CPU into N logical devices (for tests/demos).

    Must run before TensorFlow creates any tensor; the trainer calls it right after importing
    TensorFlow, before the strategy is created.
    """
    text = os.environ.get(CPU_DEVICES_ENV, "").strip()
    if not text:
        return
    if not text.isdigit() or int(text) < 1:
        raise DistributedError(f"${CPU_DEVICES_ENV} must be a positive integer, not {text!r}")
    count = int(text)
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise DistributedError(
                f"${CPU_DEVICES_ENV}={count} came too late: TensorFlow had already started"
            ) from None


_TF_CONFIG_SHAPE = ('TF_CONFIG must look like {"cluster": {"worker": ["host:port", …]}, '
                    '"task": {"type": "worker", "index": 0}}')


def make_strategy(
    tf: Any, name: str, cluster: str | Sequence[str] | None, task_index: int | None
) -> tuple[Any, bool, int]:
    """(strategy, is_chief, worker_index) for "mirrored" or "multiworker"."""
    split_cpu(tf)
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), True, 0
    if name != "multiworker":
        raise DistributedError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    if cluster is not None:
        if task_index is None:
            raise DistributedError("--cluster needs --task-index")
        config = tf_config(cluster, task_index)
    elif os.environ.get("TF_CONFIG"):
        try:
            config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise DistributedError(f"TF_CONFIG is not JSON: {exc}") from None
    else:
        raise DistributedError(
            "multiworker needs the cluster: set TF_CONFIG or give --cluster host:port,host:port "
            "--task-index I"
        )
    try:
        spec = config["cluster"]
        task_type = config["task"]["type"]
        task_id = int(config["task"]["index"])
    except (KeyError, TypeError, ValueError):
        raise DistributedError(_TF_CONFIG_SHAPE) from None
    if (not isinstance(spec, dict) or not isinstance(task_type, str)
            or not all(isinstance(v, list) for v in spec.values())):
        raise DistributedError(_TF_CONFIG_SHAPE)
    has_chief = "chief" in spec
    chief = task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)
    workers = list(spec.get("chief", [])) + list(spec.get("worker", []))
    index = 0 if task_type == "chief" else task_id + (1 if has_chief else 0)
    # checked before TensorFlow sees the cluster: it would raise its own ValueError instead
    if not 0 <= task_id < len(spec.get(task_type, [])) or not 0 <= index < len(workers):
        raise DistributedError(f"TF_CONFIG: task {task_type}:{task_id} is not in the cluster")
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type=task_type, task_id=task_id, rpc_layer="grpc")
    strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    return strategy, chief, index


@dataclass(frozen=True)
class Start:
    """What the chief decides before the first step and broadcasts to every worker.

    refused: the chief refused the run (its error is raised there; the workers stop too);
    done: the run is already completed; seed: the run's effective seed; first_epoch: the
    0-based epoch to train next (the length of the resumed history).
    """

    refused: bool
    done: bool
    seed: int
    first_epoch: int

    def as_floats(self) -> list[float]:
        """The broadcast's payload (exact: the seed is < 2**31, epochs are small)."""
        return [float(self.refused), float(self.done), float(self.seed), float(self.first_epoch)]

    @classmethod
    def from_floats(cls, values: Sequence[float]) -> Start:
        refused, done, seed, first = values
        return cls(bool(refused), bool(done), int(seed), int(first))


def run_key(*parts: str) -> float:
    """A 48-bit fingerprint (exact in float64) of what a run trains, to compare across workers."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return float(int.from_bytes(digest[:6], "big"))


class Replicated:
    """How an epoch's steps are computed under a tf.distribute strategy (loop.Steps)."""

    def __init__(
        self, tf: Any, keras: Any, strategy: Any, chief: bool, worker: int, batch: int,
        steps_per_execution: int = 1, label_smoothing: float = 0.0,
    ) -> None:
        self.tf, self.keras, self.strategy = tf, keras, strategy
        self.chief, self.worker = chief, worker
        self.replicas = int(strategy.num_replicas_in_sync)
        self.workers = int(getattr(strategy.extended, "_num_workers", 1) or 1)
        self.local = max(1, self.replicas // self.workers)
        if batch % self.replicas:
            raise DistributedError(
                f"the batch size {batch} is the global batch and must be divisible by the "
                f"{self.replicas} replicas; use e.g. --batch-size "
                f"{max(self.replicas, batch // self.replicas * self.replicas)}"
            )
        self.batch = batch
        self.steps_per_execution = steps_per_execution
        self.label_smoothing = label_smoothing  # the compiled loss's, in our own step
        self._calls: dict[int, Any] = {}  # steps per call -> its tf.function
        self._broadcast_flag: Any = None  # chief_says's tf.function

    def build(self, make: Callable[[], Any]) -> Any:
        """make() (the built, compiled model) inside the scope, with its optimizer built.

        Every worker creates the same variables in the same order (under
        MultiWorkerMirroredStrategy each creation is a collective); a checkpoint is then copied
        in (checkpoint.load_into), loaded outside the scope so it creates no collective ones.
        """
        with self.strategy.scope():
            model = make()
            model.optimizer.build(model.trainable_variables)
        return model

    # -- start: one collective that agrees on everything ----------------------------------------

    def agree(self, model: Any, start: Start, key: float) -> Start:
        """Broadcast the chief's `start` and the model's (and optimizer's) state.

        Also compares every worker's `key` (spec, settings, data): all workers raise the same
        DistributedError if they differ. With one worker nothing needs to move.
        """
        if self.workers == 1:
            return start
        tf = self.tf
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables = list(model.variables) + list(model.optimizer.variables)
        keys = np.zeros(self.workers, np.float64)
        keys[self.worker] = key
        head = np.asarray(start.as_floats(), np.float64)

        def contribution(v: Any) -> Any:
            value = tf.convert_to_tensor(v)
            value = value if value.dtype.is_floating else tf.cast(value, tf.float64)
            return value if self.chief else tf.zeros_like(value)

        tensors = [tf.constant(keys), tf.constant(head if self.chief else head * 0)]
        tensors += [contribution(v) for v in variables]

        @tf.function
        def broadcast() -> Any:
            local = self.strategy.run(lambda: [tf.identity(t) for t in tensors])
            return [self.strategy.reduce("sum", t, axis=None) for t in local]

        out = broadcast()
        all_keys = out[0].numpy()
        if len(set(all_keys.tolist())) != 1:
            raise DistributedError(
                "the workers were started with different specs, settings or data; "
                "start every worker with the same spec, flags and CIFAR-10 (or precision: "
                "`--precision auto` follows each machine's CPU, so give every worker the same "
                "explicit --precision when their CPUs differ)"
            )
        for var, value in zip(variables, out[2:], strict=True):
            var.assign(tf.cast(value, var.dtype))
        return Start.from_floats(out[1].numpy().tolist())

    def chief_says(self, flag: bool) -> bool:
        """The chief's `flag` on every worker: one small collective (a sum in which only the
        chief's replicas count), for decisions all workers must take together, such as early
        stopping, which only the chief can judge on a resumed run's whole history."""
        if self.workers == 1:
            return flag
        tf = self.tf
        if self._broadcast_flag is None:  # traced once, not once per epoch

            @tf.function
            def broadcast(mine: Any) -> Any:
                local = self.strategy.run(lambda: tf.identity(mine))
                return self.strategy.reduce("sum", local, axis=None)

            self._broadcast_flag = broadcast
        mine = tf.constant(1.0 if flag and self.chief else 0.0, tf.float64)
        return bool(float(self._broadcast_flag(mine)) > 0)

    # -- training --------------------------------------------------------------------------------

    def _dataset(self, pipeline: Any, order: np.ndarray, epoch: int) -> Any:
        """This worker's per-replica slices of each global batch, local replica by replica.

        The slice of replica g in global batch k is augmented (if the run augments) with key
        k * replicas + g: a function of where it is in the epoch, not of which worker runs it.
        """
        tf = self.tf
        rows = replica_slices(len(order), self.batch, self.replicas, self.worker, self.local)
        table = tf.constant(np.asarray(rows, np.int64).reshape(-1, 4))
        order_t = tf.constant(order)
        x, y, classes = pipeline.x_train, pipeline.y_train, pipeline.classes

        def grab(row: Any) -> Any:
            index = order_t[row[0]:row[0] + row[1]]
            images = pipeline.augmented(tf.gather(x, index), epoch, row[3])
            images = scale_images(tf, images)
            labels = tf.one_hot(tf.gather(y, index), classes, dtype=tf.float32)
            return images, labels, row[2]

        def make(_: Any) -> Any:
            ds = tf.data.Dataset.from_tensor_slices(table)
            ds = ds.map(grab, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            return ds.prefetch(tf.data.AUTOTUNE)

        options = tf.distribute.InputOptions(experimental_fetch_to_device=False)
        return self.strategy.distribute_datasets_from_function(make, options)

    def _call(self, model: Any, count: int) -> Any:
        """A tf.function running `count` training steps; returns each step's (loss, correct)."""
        if count in self._calls:
            return self._calls[count]
        tf, keras, strategy = self.tf, self.keras, self.strategy

        def replica(images: Any, labels: Any, global_batch: Any) -> Any:
            with tf.GradientTape() as tape:
                probs = model(images, training=True)
                per_example = keras.losses.categorical_crossentropy(
                    labels, probs, label_smoothing=self.label_smoothing)
                per_example = tf.cast(per_example, tf.float32)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if model.losses:
                    loss += tf.nn.scale_regularization_loss(
                        tf.add_n([tf.cast(x, tf.float32) for x in model.losses]))
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            hits = tf.equal(tf.argmax(labels, axis=1), tf.argmax(probs, axis=1))
            return loss, tf.reduce_sum(tf.cast(hits, tf.float32))

        @tf.function
        def steps(iterator: Any) -> Any:
            out = []
            for _ in range(count):  # unrolled: `count` steps in one graph call
                loss, correct = strategy.run(replica, args=next(iterator))
                out.append((strategy.reduce("sum", loss, axis=None),
                            strategy.reduce("sum", correct, axis=None)))
            return out

        self._calls[count] = steps
        return steps

    def fit_epoch(
        self,
        model: Any,
        pipeline: Any,
        order: np.ndarray,
        epoch: int,
        callbacks: Sequence[Any],
    ) -> dict[str, float]:
        """One epoch; calls the Keras callbacks' hooks as model.fit would. Returns fit's logs.

        Steps run steps_per_execution at a time, and the batch hooks are called once per call,
        with the index of its last batch, as model.fit does.
        """
        for cb in callbacks:
            cb.set_model(model)
            cb.on_epoch_begin(epoch, {})
        iterator = iter(self._dataset(pipeline, order, epoch))
        n = len(order)
        sizes = [min(self.batch, n - start) for start in range(0, n, self.batch)]
        seen = 0
        loss_sum = correct_sum = 0.0
        logs: dict[str, float] = {}
        for first in range(0, len(sizes), self.steps_per_execution):
            chunk = sizes[first:first + self.steps_per_execution]
            for cb in callbacks:
                cb.on_train_batch_begin(first, {})
            for (loss, correct), m in zip(self._call(model, len(chunk))(iterator), chunk,
                                          strict=True):
                seen += m
                loss_sum += float(loss) * m
                correct_sum += float(correct)
            logs = {"loss": loss_sum / seen, "accuracy": correct_sum / seen}
            for cb in callbacks:
                cb.on_train_batch_end(first + len(chunk) - 1, logs)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        return logs


__all__ = [
    "CPU_DEVICES_ENV", "STRATEGIES", "DistributedError", "Replicated", "Start", "make_strategy",
    "parse_cluster", "run_key", "split_cpu", "tf_config",
]
