"""How many threads the kernels use, chosen by timing training steps (the trainer's
`threads = "auto"`; setting a count itself is explorer.kernels.runtime.using_threads).

On a quiet machine every core helps. But a parallel loop (Numba's `prange`, or a BLAS call)
ends only when its slowest thread does, and each of its threads must first be woken up: when
another program keeps a core busy (the browser drawing the dashboard, a notebook's other
kernel, a test run), every one of the hundreds of parallel loops in a step waits for a
thread that has no core. Measured on 2 cores while another job ran: a tiny-preset step took
1400 ms with 2 threads and 455 ms with 1 (quiet: about 330 ms with 2).

    from explorer.kernels.runtime import using_threads
    with using_threads(1):          # Numba's loops launched from this thread, and BLAS
        trainer.step()

    trainer.threads = "auto"        # a ThreadTuner picks, and re-checks as the load changes
    trainer.threads = 1             # or fixed; None (the default): all of them, untouched

ThreadTuner times a few steps with each candidate count, taken in turns so that a change in
the machine's load hits every candidate alike, keeps the fastest, and tries again every
`recheck_every` steps or as soon as steps get `slowdown` times slower than when it chose.
The thread count changes results only in their last bits (BLAS and the gradient norm's sum
split their work by thread; measured: parameters within 6e-7 after 5 steps of reverse-tiny).
"""
import statistics
from collections.abc import Iterable

from ..kernels.runtime import max_threads


class ThreadTuner:
    """Chooses a thread count from measured step times (see the module's docstring).

    Each step: n = tuner.next_threads(); run the step with n threads; tuner.record(n, seconds).
    """

    def __init__(self, candidates: Iterable[int] | None = None, trial_steps: int = 3,
                 recheck_every: int = 200, slowdown: float = 1.5):
        most = max_threads()
        if candidates is None:
            candidates = {most, max(1, most - 1), 1}   # all; all but one (for the browser); one
        self.candidates = sorted(set(candidates), reverse=True)
        if not self.candidates or not all(1 <= c <= most for c in self.candidates):
            raise ValueError(f"candidates must be thread counts from 1 to {most}, got {candidates}")
        if trial_steps < 1 or recheck_every < 1 or slowdown <= 1:
            raise ValueError("trial_steps and recheck_every must be >= 1 and slowdown > 1, got "
                             f"{trial_steps}, {recheck_every}, {slowdown}")
        self.trial_steps, self.recheck_every, self.slowdown = trial_steps, recheck_every, slowdown
        self.choice = self.candidates[0]
        self.trials = []          # (thread count chosen, {count: median seconds}) per trial
        self._start_trial()

    def _start_trial(self):
        self._plan = [c for _ in range(self.trial_steps) for c in self.candidates]
        self._times = {c: [] for c in self.candidates}
        self._since, self._recent, self._chosen_time = 0, [], None

    def next_threads(self) -> int:
        """How many threads the next step should use."""
        return self._plan[0] if self._plan else self.choice

    def record(self, threads: int, seconds: float) -> None:
        """The step that next_threads() asked for took `seconds`."""
        if self._plan:
            if threads != self._plan[0]:
                return            # not the step asked for (e.g. threads changed by hand)
            self._plan.pop(0)
            self._times[threads].append(seconds)
            if not self._plan:
                medians = {c: statistics.median(t) for c, t in self._times.items()}
                self.choice = min(medians, key=medians.get)
                self._chosen_time = medians[self.choice]
                self.trials.append((self.choice, medians))
            return
        self._since += 1
        self._recent = (self._recent + [seconds])[-self.trial_steps:]
        slower = (len(self._recent) == self.trial_steps and
                  statistics.median(self._recent) > self.slowdown * self._chosen_time)
        if self._since >= self.recheck_every or slower:
            self._start_trial()

    def __repr__(self):
        state = "trying " + str(self._plan[0]) if self._plan else f"chose {self.choice}"
        return f"ThreadTuner(candidates={self.candidates}, {state})"
