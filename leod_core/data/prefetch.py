"""Read ahead: produce item ``k + 1`` in a background thread while the caller consumes item ``k``."""
from __future__ import annotations

from concurrent.futures import Executor, Future, wait
from typing import Callable, Iterator, Optional, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def iter_prefetched(items: Sequence[Item], load: Callable[[Item], Result], executor: Optional[Executor]
                    ) -> Iterator[Result]:
    """``load(item)`` for every item in order. With an ``executor`` the next load runs in it while the current
    result is consumed (one load in flight, so ``load`` may keep state between calls); without one, inline.
    Closed early or failing, it waits for the load in flight before returning, so that a caller may then close
    what ``load`` reads."""
    if executor is None:
        for item in items:
            yield load(item)
        return
    pending: Optional[Future] = executor.submit(load, items[0]) if items else None
    try:
        for k in range(len(items)):
            current = pending
            pending = executor.submit(load, items[k + 1]) if k + 1 < len(items) else None
            yield current.result()
    finally:
        if pending is not None:
            pending.cancel()
            wait([pending])
