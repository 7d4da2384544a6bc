"""Keep a running job's lease: extend it every heartbeat, and watch for a cancel request.

A cancel published in this process wakes the keeper at once; one made elsewhere (another
process, a restart) is seen at the next heartbeat, whose write returns the flag.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sakuga.notify import Notifier, cancel_key
from sakuga.store.leases import Lease, LeaseStore


async def keep_lease(
    leases: LeaseStore,
    notifier: Notifier,
    lease: Lease,
    *,
    heartbeat_s: float,
    lease_s: float,
    on_cancel: Callable[[], Awaitable[None]],
) -> None:
    """Heartbeat until cancelled; returns when the lease is lost (another worker owns the job).

    ``on_cancel`` is awaited once, the first time a cancel request is seen.
    """
    # Subscribed for the whole run, so a cancel published between two waits is not lost.
    key = cancel_key(lease.job_id)
    wake = notifier.subscribe(key)
    canceled = False
    next_beat = time.monotonic() + heartbeat_s
    try:
        while True:
            await notifier.wait_event(wake, max(0.0, next_beat - time.monotonic()))
            wake.clear()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + heartbeat_s
                state = await leases.heartbeat(lease, lease_s)
                if state is None:
                    return
                requested = state
            else:
                requested = await leases.cancel_requested(lease)
            if requested and not canceled:
                canceled = True
                await on_cancel()
    finally:
        notifier.unsubscribe(key, wake)
