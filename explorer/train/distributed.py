"""Data parallelism on MPI: one model, trained by N processes on one global batch.

    mpiexec -n 4 explorer train --preset shakespeare-char [--zero 1]
    trainer = Trainer(model, data, batch_size=64)       # under mpiexec: data-parallel by itself
    trainer = Trainer(model, data, batch_size=64, comm=MPI.COMM_WORLD, zero=1)

Every process (a *rank*) holds the whole model. A step, as explorer.train.trainer takes it:

1. every rank draws the whole global batch from the same random stream, so the rows are exactly
   those one process would draw, and keeps its share: rows [r B / N, (r + 1) B / N);
2. forward and backward on those rows: g_r, the gradient of the mean loss over its n_r
   counted targets (a toy task's prompt positions have target -1 and do not count);
3. one small exchange: every rank's loss sum, its n_r, and whether it raised (if one did,
   every rank raises the same RankError naming it, and the step is undone everywhere);
4. one Allreduce (a sum) of (n_r / n) g_r over the flat gradient buffer. One process's loss is
   the mean over all n counted targets,
       L = (1/n) sum_i l_i = sum_r (n_r / n) [(1/n_r) sum_{i in rank r} l_i],
   so its gradient is sum_r (n_r / n) g_r: the same numbers, summed in another order;
5. the global gradient norm, for clipping, from each rank's sum of squares over its 1/N of the
   buffer; then the same AdamW step on every rank. With ZeRO-1 (zero=1) each rank keeps only
   its 1/N of AdamW's m and v, updates its 1/N of the parameters, and an Allgather brings
   every rank the others' slices.

Every wait has a deadline (`timeout` seconds): a rank that died, hangs, or left the loop makes
the others raise a RankError naming it (a roll call finds who is silent). mpi4py is imported
only when a communicator is in use; `pip install "transformer-explorer[mpi]"` installs it.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..kernels.runtime import max_threads

#: How long a rank waits for the others at any one point before it holds a roll call and
#: gives up (seconds). Long enough for the slowest legitimate wait: compiling the kernels on a
#: cold cache, or rank 0 writing a GPT-2-sized checkpoint while the others wait for it.
DEFAULT_TIMEOUT_S = 300.0
#: Launchers' environment variables that give the number of ranks they started.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
                            "SLURM_STEP_NUM_TASKS")
_MESSAGE_BYTES = 400         # an error's text in an exchange (cut there)
_TEXT_BYTES = 4096           # a result rank 0 shares (a run folder's path)
_ROLL_CALL_TAG = 7301
_SPIN_S = 0.005              # test a pending request in a tight loop this long, then...
_NAP_S = 0.0002              # ...sleep this long between tests (leave the core to others)


class RankError(RuntimeError):
    """A rank failed, so no rank can take the step.

    ranks: the ranks that failed (raised, or stopped answering). agreed: True when every rank
    raises this same error at the same point (it came out of an exchange all of them
    finished): the group is still whole and the step was undone everywhere. False when ranks
    were lost: this rank cannot go on with the others; restart from the last checkpoint."""

    def __init__(self, message: str, ranks: Sequence[int], agreed: bool):
        super().__init__(message)
        self.ranks = list(ranks)
        self.agreed = agreed


def launched_ranks() -> int:
    """How many ranks the launcher (mpiexec, mpirun, srun) says it started; 1 without one."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def world() -> Any:
    """MPI.COMM_WORLD when this process is one of several ranks a launcher started, else None.
    mpi4py (which starts MPI) is imported only then."""
    if launched_ranks() <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(f"this process was started by an MPI launcher as one of "
                          f"{launched_ranks()} ranks, but mpi4py is not installed: "
                          f"pip install \"transformer-explorer[mpi]\" (on a cluster, build mpi4py "
                          f"against the cluster's MPI; see the README, Scale out)") from None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def mpiexec_command(ranks: int, *options: str) -> list[str]:
    """The start of a command line that runs `ranks` copies of this Python under mpiexec:
    the mpiexec installed beside it (the [mpi] extra's MPICH) or else the one on the PATH.

        subprocess.run(mpiexec_command(2) + ["-m", "explorer", "train", "--steps", "20"])"""
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise ValueError(f"ranks must be an integer >= 1, got {ranks!r}")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(f"no mpiexec beside {sys.executable} or on the PATH: pip install "
                                f"\"transformer-explorer[mpi]\" (or load your cluster's MPI module)")
    return [found, *options, "-n", str(ranks), sys.executable]


def data_parallel(comm: Any, num_params: int, zero: int = 0,
                  timeout: float = DEFAULT_TIMEOUT_S) -> DataParallel | None:
    """The trainer's group: comm is "auto" (MPI's world when a launcher started several ranks,
    else one process), None (one process), or an mpi4py communicator."""
    if isinstance(comm, str):
        if comm != "auto":
            raise ValueError(f"comm must be \"auto\", None or an mpi4py communicator, got {comm!r}")
        comm = world()
    if zero not in (0, 1):
        raise ValueError(f"zero must be 0 (every rank keeps all of AdamW's m and v) or 1 (each "
                         f"keeps 1/N of them), got {zero!r}")
    if comm is None:
        return None
    return DataParallel(comm, num_params, zero=zero, timeout=timeout)


def shard_segments(offsets: np.ndarray, owned: slice) -> np.ndarray:
    """The parameters' offsets (S+1,) as seen from inside the slice `owned` of the flat buffer:
    the segments AdamW needs to update that slice alone (a parameter cut by the slice's edge
    keeps its part; one outside it becomes empty)."""
    return (np.clip(offsets, owned.start, owned.stop) - owned.start).astype(offsets.dtype)


class DataParallel:
    """N ranks of one training run: which rows and which slice of the parameters are this
    rank's, and every collective the trainer needs, each with a deadline."""

    def __init__(self, comm: Any, num_params: int, zero: int = 0,
                 timeout: float = DEFAULT_TIMEOUT_S):
        from mpi4py import MPI
        if not isinstance(comm, MPI.Comm) or comm == MPI.COMM_NULL:
            raise TypeError(f"comm must be an mpi4py communicator (such as MPI.COMM_WORLD), got "
                            f"{comm!r}")
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self._mpi = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.zero = zero
        self.timeout = float(timeout)
        # contiguous slices of the flat buffers, as equal as integers allow
        bounds = [r * num_params // self.size for r in range(self.size + 1)]
        self.counts = np.diff(bounds).astype(np.int64)
        self.displacements = np.array(bounds[:-1], np.int64)
        #: the part of the flat buffers this rank sums for the norm, and updates under ZeRO-1
        self.owned = slice(bounds[self.rank], bounds[self.rank + 1])
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = local.Get_size()     # ranks on this machine, sharing its cores
        local.Free()
        self.lost: str | None = None           # why the group broke, once it has

    def __repr__(self):
        zero = ", ZeRO-1" if self.zero else ""
        return f"DataParallel(rank {self.rank} of {self.size}{zero}, timeout {self.timeout:g} s)"

    # ----------------------------------------------------------------- who does what
    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of batch_size rows."""
        if batch_size < self.size:
            raise ValueError(f"batch_size={batch_size} is smaller than the number of ranks "
                             f"({self.size}): every rank needs at least one row; expected "
                             f"batch_size >= {self.size}")
        return slice(self.rank * batch_size // self.size, (self.rank + 1) * batch_size // self.size)

    def default_threads(self) -> int:
        """Threads per rank: this machine's cores shared among its ranks (or the cores the
        launcher bound this rank to, when it did)."""
        allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        cores = os.cpu_count() or 1
        if allowed is not None and allowed < cores:   # bound by the launcher: these are ours
            return max(1, min(allowed, max_threads()))
        return max(1, min(cores // self.local_size, max_threads()))

    # ----------------------------------------------------------------- a step's pieces
    def gradients(self, model: Any, draw: Callable[[], tuple[np.ndarray, np.ndarray]],
                  what: str) -> tuple[float, dict]:
        """Forward and backward on this rank's rows of the global batch draw() returns (x, y),
        then the gradient of the mean loss over the whole batch in model.flat_grads, on every
        rank (steps 1-4 of the module's docstring). Returns (the batch's mean loss, metrics:
        "tokens" in the global batch, "ranks", "allreduce_ms"); a NaN loss comes back as it
        is, for the trainer to refuse on every rank alike."""
        error, loss_sum, counted, tokens = None, 0.0, 0, 0
        try:
            x, y = draw()
            tokens = x.size
            rows = self.rows(len(x))
            x, y = x[rows], y[rows]
            counted = int(np.count_nonzero(y >= 0))
            if counted:
                _, local_loss = model.forward(x, y)
                model.backward()
                loss_sum = local_loss * counted
            else:                    # none of this rank's targets count: it adds nothing
                model.flat_grads[...] = 0.0
        except Exception as err:     # every rank learns of it in the exchange, and raises
            error = err
        table = self.exchange([loss_sum, counted], error, what)
        total = int(table[:, 1].sum())
        if total == 0:
            raise ValueError(f"{what}: the batch's targets are all -1: no position to compute a "
                             f"loss on")
        loss = math.fsum(table[:, 0]) / total
        if not math.isfinite(loss):
            return loss, {"tokens": tokens}
        np.multiply(model.flat_grads, np.float32(counted / total), out=model.flat_grads)
        t0 = time.perf_counter()
        self.allreduce_sum(model.flat_grads, f"{what}: the gradient Allreduce")
        return loss, {"tokens": tokens, "ranks": self.size,
                      "allreduce_ms": 1000 * (time.perf_counter() - t0)}

    def mean_losses(self, model: Any, draw: Callable[[], tuple[np.ndarray, np.ndarray]],
                    batches: int, what: str) -> list[float]:
        """The mean loss of each of `batches` batches from draw(), over all its counted
        targets, every rank computing its rows; one exchange for all the batches."""
        error, sums = None, []
        try:
            for _ in range(batches):
                x, y = draw()
                rows = self.rows(len(x))
                counted = int(np.count_nonzero(y[rows] >= 0))
                loss = model.forward(x[rows], y[rows])[1] if counted else 0.0
                sums += [loss * counted, counted]
        except Exception as err:
            error, sums = err, [0.0] * (2 * batches)   # as many values as the others send
        table = self.exchange(sums, error, what)
        targets = table[:, 1::2].sum(axis=0)
        if not targets.all():
            raise ValueError(f"{what}: a batch's targets are all -1: no position to compute a "
                             f"loss on")
        return [math.fsum(table[:, 2 * b]) / targets[b] for b in range(batches)]

    def sharded_update(self, update: Callable[[], None], count_nonfinite: Callable[[], int],
                       flat_params: np.ndarray, what: str) -> int:
        """ZeRO-1: update() writes this rank's slice of the parameters (and its m and v);
        when every rank's went well, an Allgather gives each the others' slices. Returns how
        many parameters became NaN or Inf over all ranks (then nothing is gathered)."""
        error, bad = None, 0
        try:
            update()
            bad = count_nonfinite()
        except Exception as err:
            error = err
        bad = int(self.exchange([bad], error, what).sum())
        if not bad:
            self.allgather_params(flat_params, f"{what}: the parameters' Allgather")
        return bad

    # ----------------------------------------------------------------- collectives
    def exchange(self, values: Sequence[float], error: BaseException | None = None,
                 what: str = "an exchange") -> np.ndarray:
        """Every rank's `values` (floats), as a (size, len(values)) float64 array in rank order.
        error: what this rank raised instead of computing its values. If any rank had one,
        every rank raises one RankError naming them all (agreed: the group is still whole)."""
        k = len(values)
        record = np.zeros(8 * (k + 1) + _MESSAGE_BYTES, np.uint8)
        head = record[:8 * (k + 1)].view(np.float64)
        if error is None:
            head[1:] = values
        else:
            head[0] = 1.0
            text = f"{type(error).__name__}: {error}".encode()[:_MESSAGE_BYTES]
            record[8 * (k + 1):8 * (k + 1) + len(text)] = np.frombuffer(text, np.uint8)
        table = np.empty((self.size, record.size), np.uint8)
        self._wait(lambda: self.comm.Iallgather(record, table), what)
        heads = np.ascontiguousarray(table[:, :8 * (k + 1)]).view(np.float64)
        failed = [int(r) for r in np.flatnonzero(heads[:, 0])]
        if failed:
            said = "; ".join(f"rank {r} raised {_text(table[r, 8 * (k + 1):])}" for r in failed)
            raise RankError(f"{what}: {said}", failed, agreed=True) from error
        return heads[:, 1:]

    def run_on_root(self, work: Callable[[], str | None], what: str) -> str | None:
        """Rank 0 runs work() (it owns the run's files) and every rank gets its result. If work
        raised, rank 0 raises that, and the others a RankError naming rank 0 (agreed)."""
        record = np.zeros(1 + _TEXT_BYTES, np.uint8)
        error = None
        if self.rank == 0:
            try:
                text = (work() or "").encode()
                if len(text) > _TEXT_BYTES:
                    raise ValueError(f"{what}: the result is {len(text)} bytes long; at most "
                                     f"{_TEXT_BYTES} can be shared")
            except Exception as err:   # told to the others below, then raised here
                error, record[0] = err, 1
                text = f"{type(err).__name__}: {err}".encode()[:_TEXT_BYTES]
            record[1:1 + len(text)] = np.frombuffer(text, np.uint8)
        self._wait(lambda: self.comm.Ibcast(record, root=0), what)
        if record[0]:
            if error is not None:
                raise error
            raise RankError(f"{what}: rank 0 raised {_text(record[1:])}", [0], agreed=True)
        return _text(record[1:]) or None

    def broadcast(self, array: np.ndarray, what: str) -> None:
        """Rank 0's array into every rank's (in place)."""
        self._wait(lambda: self.comm.Ibcast(array, root=0), what)

    def allreduce_sum(self, buffer: np.ndarray, what: str) -> None:
        """buffer = the sum of every rank's buffer, in place, on every rank."""
        self._wait(lambda: self.comm.Iallreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM), what)

    def global_norm(self, grads: np.ndarray, norm_kernel: Callable[[np.ndarray], float],
                    what: str) -> float:
        """The Euclidean norm of the whole (already reduced) gradient buffer: each rank takes its
        own slice's norm, and every rank adds the squares in the same (rank) order, so all of
        them get the same bits, whatever their thread counts."""
        error, part = None, 0.0
        try:
            part = float(norm_kernel(grads[self.owned]))
        except Exception as err:
            error = err
        squares = self.exchange([part * part], error, what)[:, 0]
        return math.sqrt(math.fsum(squares))

    def allgather_params(self, flat: np.ndarray, what: str) -> None:
        """Every rank's owned slice of `flat` into every rank's copy (ZeRO-1's last move)."""
        MPI = self._mpi
        spec = [flat, (self.counts, self.displacements), MPI.FLOAT]
        self._wait(lambda: self.comm.Iallgatherv(MPI.IN_PLACE, spec), what)

    def gather_shards(self, shard: np.ndarray, what: str) -> np.ndarray | None:
        """The whole flat buffer from every rank's slice (ZeRO-1's m or v), on rank 0 only."""
        MPI = self._mpi
        full = np.empty(int(self.counts.sum()), np.float32) if self.rank == 0 else None
        spec = [full, (self.counts, self.displacements), MPI.FLOAT] if self.rank == 0 else None
        send = np.ascontiguousarray(shard, np.float32)
        self._wait(lambda: self.comm.Igatherv(send, spec, root=0), what)
        return full

    def check_replicas(self, array: np.ndarray, what: str) -> None:
        """Raise (agreed) unless every rank holds the same bits in `array`: replicas that drift
        apart would be saved as rank 0's alone and silently lose the others' work."""
        digest = zlib.crc32(memoryview(np.ascontiguousarray(array)).cast("B"))
        digests = self.exchange([float(digest)], None, f"comparing {what}")[:, 0]
        if np.any(digests != digests[0]):
            differ = [int(r) for r in np.flatnonzero(digests != digests[0])]
            raise RankError(f"ranks {differ} hold different {what} from rank 0 (CRC-32 per rank: "
                            f"{[int(d) for d in digests]}); expected one copy on every rank",
                            differ, agreed=True)

    # ----------------------------------------------------------------- waiting
    def _wait(self, start: Callable[[], Any], what: str) -> None:
        """Start a non-blocking collective and wait for it, until the deadline."""
        if self.lost is not None:
            raise RankError(f"{what}: this group already lost a rank ({self.lost}); restart from "
                            f"the last checkpoint", [], agreed=False)
        request = start()
        began = time.monotonic()
        while not request.Test():
            waited = time.monotonic() - began
            if waited > self.timeout:
                self._give_up(what)
            if waited > _SPIN_S:
                time.sleep(_NAP_S)

    def _give_up(self, what: str) -> None:
        missing = self._roll_call()
        if missing:
            names = ", ".join(map(str, missing))
            self.lost = (f"rank{'s' if len(missing) > 1 else ''} {names} stopped answering "
                         f"during {what}")
            message = (f"{what}: no answer from rank{'s' if len(missing) > 1 else ''} {names} "
                       f"within {self.timeout:g} s (it died, hangs, or left training; its own "
                       f"error, if it had one, is in its output). Rank {self.rank} stops here; "
                       f"restart from the last checkpoint")
        else:
            self.lost = f"the ranks fell out of step during {what}"
            message = (f"{what}: every rank answers a roll call, yet this wait found no match "
                       f"within {self.timeout:g} s: the ranks are waiting at different points "
                       f"(did every rank call the same trainer methods in the same order?)")
        raise RankError(message, missing, agreed=False)

    def _roll_call(self) -> list[int]:
        """The ranks that do not answer: every rank whose wait ran out sends its number to all
        the others and listens for theirs, for up to `timeout` seconds (a live rank runs out of
        time within about one step of the others)."""
        others = [r for r in range(self.size) if r != self.rank]
        mine = np.array([self.rank], np.int64)
        sends = [self.comm.Isend(mine, dest=r, tag=_ROLL_CALL_TAG) for r in others]
        inbox = {r: np.empty(1, np.int64) for r in others}
        waiting = {r: self.comm.Irecv(inbox[r], source=r, tag=_ROLL_CALL_TAG) for r in others}
        deadline = time.monotonic() + self.timeout
        while waiting and time.monotonic() < deadline:
            for r in [r for r, request in waiting.items() if request.Test()]:
                del waiting[r]
            time.sleep(_NAP_S)
        for request in waiting.values():
            request.Cancel()       # nobody will answer them: let MPI drop them
        for request in sends:
            request.Test()         # small sends complete on their own; nothing to wait for
        return sorted(waiting)


def _text(raw: np.ndarray) -> str:
    return bytes(raw).rstrip(b"\0").decode("utf-8", errors="replace")
