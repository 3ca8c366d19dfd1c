"""Talks to the Rasa server over its REST channel; the sender id is Sila's conversation id."""
from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


class RasaUnavailable(Exception):
    """Rasa did not answer; the message stays pending and is replayed later."""


class RasaClient:
    def __init__(self, base_url: str, timeout: float, session: aiohttp.ClientSession):
        self.base_url = base_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session = session

    async def converse(self, sender: str, text: str, metadata: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one patient message; returns the bot's replies (text and optional buttons)."""
        payload = {"sender": sender, "message": text, "metadata": metadata}
        try:
            async with self.session.post(
                f"{self.base_url}/webhooks/rest/webhook", json=payload, timeout=self.timeout
            ) as response:
                if response.status != 200:
                    raise RasaUnavailable(f"Rasa answered HTTP {response.status}")
                return await response.json()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RasaUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def is_ready(self) -> bool:
        try:
            async with self.session.get(f"{self.base_url}/status", timeout=self.timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False
