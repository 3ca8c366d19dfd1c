"""In-process fan-out of conversation updates to whoever is watching (web chat sockets, consoles)."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator


class EventBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue]] = defaultdict(set)

    @contextmanager
    def subscribe(self, topic: str) -> Iterator[asyncio.Queue]:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        self._subscribers[topic].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[topic].discard(queue)
            if not self._subscribers[topic]:
                del self._subscribers[topic]

    def watchers(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    def publish(self, topic: str, event: dict[str, Any]) -> int:
        """Deliver to every current subscriber; returns how many got it."""
        queues = self._subscribers.get(topic, ())
        for queue in queues:
            if queue.full():  # a stalled watcher must not block the hub; it will resync from the DB
                queue.get_nowait()
            queue.put_nowait(event)
        return len(queues)
