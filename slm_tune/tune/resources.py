"""How many CPU threads a trial gets: a trial does not scale past a few threads, concurrent trials do.

The measured speed-ups, in one place. A baseline trial on the fast path:
- this machine (2-core Zen 4, torch 2.13): 2.53 s per iteration on 1 thread, 1.43 s on 2, so 2
  threads are 1.77x faster (bench/README.md);
- a 16-core Intel Xeon with AMX (torch 2.11): 2,239 tokens/s on 1 thread, 2,781 on 2, 3,727 on 4,
  5,536 on 8 and 5,588 on 16 (its bfloat16 matmul peak: 290 GFLOP/s on 1 thread, 3,112 on 16, so
  the 16-thread trial used 18% of the machine).
The model takes this machine's 1.77x for 2 threads and the Xeon's gains beyond 2 threads on top of
it (4 threads: 1.77 x 3,727 / 2,781, ...); between the measured counts it interpolates in log2 of
the threads, and past 16 threads a trial is no faster.
"""

from __future__ import annotations

import math

TWO_THREADS = 1.77  # measured here
_XEON_TOKENS_PER_S = {2: 2781, 4: 3727, 8: 5536, 16: 5588}
SPEEDUP: dict[int, float] = {1: 1.0, **{t: TWO_THREADS * v / _XEON_TOKENS_PER_S[2] for t, v in _XEON_TOKENS_PER_S.items()}}
PAYS = 0.97  # threads "pay" up to the count that reaches 97% of the most a trial can gain


def speedup(threads: int) -> float:
    """A trial's speed on `threads` threads relative to one thread."""
    counts = sorted(SPEEDUP)
    if threads <= 1:
        return 1.0
    if threads >= counts[-1]:
        return SPEEDUP[counts[-1]]
    lo = max(t for t in counts if t <= threads)
    hi = min(t for t in counts if t >= threads)
    if lo == hi:
        return SPEEDUP[lo]
    w = (math.log2(threads) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    return SPEEDUP[lo] + w * (SPEEDUP[hi] - SPEEDUP[lo])


def threads_that_pay(cpus: int) -> int:
    """The fewest threads that give a trial 97% of the speed it could get on `cpus` threads."""
    best = speedup(cpus)
    return next(t for t in range(1, cpus + 1) if speedup(t) >= PAYS * best)


def study_time(n_trials: int, cpus: int, threads: int, max_concurrent: int | None = None) -> float:
    """A study's time in one-thread trial lengths: it runs in rounds of trials side by side."""
    at_once = max(1, min(n_trials, cpus // threads, max_concurrent or cpus))
    return math.ceil(n_trials / at_once) / speedup(threads)


def default_cpus_per_trial(n_trials: int, cpus: int, max_concurrent: int | None) -> int:
    """The fewest threads per trial that finish the study within 3% of the soonest, by the model
    above (a lone trial on 64 CPUs gets 8: 16 would be 1% faster).

    Many trials: one thread each, side by side (14 trials on 16 CPUs: 14 at once). Few trials: the
    CPUs the missing trials would have used, as far as they pay (3 trials on 16 CPUs: 5 each). A
    last round with a lone trial is weighed too (3 trials on 2 CPUs: 2 threads each, one at a
    time, measured 177-179 s against 182-200 s). A concurrency the user chose is never lowered.
    """
    n_trials = max(1, n_trials)
    keep = min(n_trials, max_concurrent) if max_concurrent else 1
    candidates = [t for t in range(1, max(1, cpus) + 1) if cpus // t >= keep] or [1]
    times = {t: study_time(n_trials, cpus, t, max_concurrent) for t in candidates}
    best = min(times.values())
    return min(t for t, time in times.items() if time <= best / PAYS)  # more threads must pay 3%
