#!/usr/bin/env python
"""SPEC §14.3 for the executor alone: AsyncExecutor against asyncio.gather under a semaphore.

Usage, from the repository root::

    python benchmarks/async_bench.py                  # 10,000 x sleep(0.01), 1,000 at once
    python benchmarks/async_bench.py --tasks 2000 --repeat 5

Each repeat times both sides one after the other, in this process:

* executor: ``AsyncExecutor(max_workers=W)``, already started (one warm-up item), gets ``N``
  submits of ``asyncio.sleep(S)``; timed from the first submit to the last result.
* baseline: on an event loop already created, ``asyncio.gather`` over the same ``N`` coroutines,
  each under one ``asyncio.Semaphore(W)``; timed around ``run_until_complete``.

The figure is the median of the per-repeat ratios executor / baseline (§14.3 wants <= 1.5).
No runner and no events are involved: this measures the executor's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from event_pipeline._async import AsyncExecutor


def time_executor(tasks: int, workers: int, seconds: float) -> float:
    executor = AsyncExecutor(max_workers=workers)
    try:
        executor.submit(asyncio.sleep, 0).result()
        started = time.perf_counter()
        futures = [executor.submit(asyncio.sleep, seconds) for _ in range(tasks)]
        for future in futures:
            future.result()
        return time.perf_counter() - started
    finally:
        executor.shutdown()


def time_gather(tasks: int, workers: int, seconds: float) -> float:
    async def main() -> None:
        semaphore = asyncio.Semaphore(workers)

        async def one() -> None:
            async with semaphore:
                await asyncio.sleep(seconds)

        await asyncio.gather(*(one() for _ in range(tasks)))

    loop = asyncio.new_event_loop()
    try:
        started = time.perf_counter()
        loop.run_until_complete(main())
        return time.perf_counter() - started
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=0.01)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()

    ratios, executor_times, gather_times = [], [], []
    for _ in range(options.repeat):
        executor_time = time_executor(options.tasks, options.workers, options.sleep)
        gather_time = time_gather(options.tasks, options.workers, options.sleep)
        executor_times.append(executor_time)
        gather_times.append(gather_time)
        ratios.append(executor_time / gather_time)

    print(
        f"{options.tasks} x asyncio.sleep({options.sleep}), {options.workers} at once, "
        f"median of {options.repeat}"
    )
    print(f"  AsyncExecutor             {statistics.median(executor_times):8.3f} s")
    print(f"  gather + Semaphore        {statistics.median(gather_times):8.3f} s")
    print(f"  ratio (median of paired)  {statistics.median(ratios):8.2f}  (SPEC 14.3: <= 1.5)")


if __name__ == "__main__":
    main()
