"""The lifecycle every fake provider server shares: its aiohttp app on a free loopback port, run in
the test's own loop (unit tests) or in a thread with its own loop (a hub run as a subprocess)."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class LocalHttpServer:
    port: int

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self):
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self._runner.cleanup()

    def start_in_thread(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(10)
        return self

    def stop_thread(self) -> None:
        asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
