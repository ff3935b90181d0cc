"""EventBus: publishing never blocks or raises, slow subscribers lose their oldest events."""

from __future__ import annotations

import asyncio
import threading

from router.events import EventBus, RulesChanged


async def test_broken_callback_is_logged_not_raised(caplog) -> None:
    bus = EventBus()
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("subscriber bug")

    bus.add_callback(broken)
    remove = bus.add_callback(seen.append)
    ev = RulesChanged()
    bus.publish(ev)
    assert seen == [ev]
    assert "subscriber bug" in caplog.text
    remove()
    bus.publish(RulesChanged())
    assert seen == [ev]


async def test_full_subscription_drops_the_oldest_and_counts() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=3)
    events = [RulesChanged() for _ in range(5)]
    for e in events:
        bus.publish(e)  # nobody reads: must not block
    assert sub.dropped == 2
    got = [await asyncio.wait_for(sub.get(), 5) for _ in range(3)]
    assert got == events[2:]
    sub.close()
    bus.publish(RulesChanged())
    assert sub._queue.empty()


async def test_publish_from_another_thread_reaches_the_loop_subscriber() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    ev = RulesChanged()
    t = threading.Thread(target=bus.publish, args=(ev,))
    t.start()
    t.join(5)
    assert await asyncio.wait_for(sub.get(), 5) is ev


async def test_subscription_iterates_until_closed() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    evs = [RulesChanged(), RulesChanged()]
    for e in evs:
        bus.publish(e)
    sub.close()
    got = [e async for e in sub]
    assert got == evs
