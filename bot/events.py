"""In-process fan-out of conversation updates to whoever is watching (web chat sockets, consoles)."""
from __future__ import annotations

import asyncio
import json
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


class RedisEventBus(EventBus):
    """Fan-out across Sila workers: every event goes through Redis pub/sub and each worker hands it
    to its own subscribers, so a message arriving at one worker reaches a console on another.
    Pub/sub keeps nothing: a watcher that reconnects catches up from the database."""

    PREFIX = "sila:events:"

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis.asyncio as redis

        self._redis = redis.from_url(url)
        self._outgoing: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.psubscribe(self.PREFIX + "*")
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive(pubsub))]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    def publish(self, topic: str, event: dict[str, Any]) -> int:
        """Queued for Redis in order; returns the watchers on this worker (others are not known)."""
        self._outgoing.put_nowait((topic, event))
        return self.watchers(topic)

    async def _send(self) -> None:
        while True:
            topic, event = await self._outgoing.get()
            await self._redis.publish(self.PREFIX + topic, json.dumps(event, ensure_ascii=False))

    async def _receive(self, pubsub) -> None:
        async for item in pubsub.listen():
            if item["type"] == "pmessage":
                topic = item["channel"].decode().removeprefix(self.PREFIX)
                super().publish(topic, json.loads(item["data"]))
