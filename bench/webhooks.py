"""Inbound SMS webhooks under load: signed Twilio webhooks from 50 concurrent clients on loopback,
each answered once the message is stored (the reply is enqueued and sent in the background).

Sila runs as its own process (`sila serve`, SQLite, SMS channel). The bot is either an instant
stand-in for Rasa's REST channel (--bot instant: every message is answered and the reply sent to
the fake Twilio, with no model time in the way) or unreachable (--bot down: one "reply will
follow" per patient, the rest kept for replay). Prints figures; asserts nothing.

Besides the webhooks' rate and response times it reports when the last reply reached the fake
Twilio, and Sila's CPU time per webhook up to then (the whole pipeline: store, bot, outbox, and
whatever EHR mirroring ran meanwhile); with --ehr it also waits for the EHR outbox to empty.
On a shared machine the wall-clock figures depend on the neighbours; the CPU time does not.
Usage: python -m bench.webhooks [--requests 5000] [--clients 50] [--bot instant|down] [--ehr]
       [--database-url postgresql+asyncpg://…]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot.settings import ROOT
from crm_store.db import create_engine
from crm_store.models import EhrOutbox
from tests.fakes.tcp_proxy import _free_port
from tests.stack import wait_http
from tests.fakes.twilio_server import FakeTwilio

SID, TOKEN, SMS_FROM = "AC" + "b" * 32, "bench-auth-token", "+15005550006"
PATH = "/webhooks/twilio/messages"


class InstantBot:
    """Rasa's REST channel answering every message at once, in a thread of its own."""

    def __init__(self):
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _reply(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response([{"recipient_id": body["sender"], "text": "We open at 8:00 am."}])

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"model_file": "instant"})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/webhooks/rest/webhook", self._reply)
        app.router.add_get("/status", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> "InstantBot":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def start_sila(workdir: Path, fake: FakeTwilio, database_url: str | None,
               bot: InstantBot | None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    database_url = database_url or f"sqlite+aiosqlite:///{workdir}/sila.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SILA_DATABASE_URL": database_url,
           "SILA_PORT": str(port), "SILA_RASA_URL": f"http://127.0.0.1:{bot.port if bot else _free_port()}",
           "SILA_REPLAY_INTERVAL": "3600", "SILA_CHANNELS": "sms", "SILA_TWILIO_ACCOUNT_SID": SID,
           "SILA_TWILIO_AUTH_TOKEN": TOKEN, "SILA_TWILIO_API_URL": fake.url, "SILA_TWILIO_SMS_FROM": SMS_FROM,
           "SILA_SMS_RATE": "1000", "SILA_LOG_LEVEL": "ERROR"}
    sila = [sys.executable, "-m", "bot.cli"]
    subprocess.run([*sila, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    subprocess.run([*sila, "seed", "demo"], env=env, cwd=ROOT, check=True, capture_output=True)
    with open(workdir / "sila.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([*sila, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc, workdir / "sila.log", 60)
    except RuntimeError:
        proc.terminate()
        raise
    return proc, base


async def load(base: str, total: int, clients: int, first: int = 0) -> tuple[list[float], float, dict[int, int]]:
    validator = RequestValidator(TOKEN)
    url = base + PATH  # no public URL configured: Sila checks the URL it was called on
    counter = iter(range(first, first + total))
    run = uuid.uuid4().hex[:8]  # fresh MessageSids on every run, even against a reused database
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(http: aiohttp.ClientSession, n: int) -> None:
        sender = f"+9665{n:08d}"
        for i in counter:
            sid = f"SM{run}{i:024x}"
            params = {"MessageSid": sid, "SmsMessageSid": sid, "AccountSid": SID, "From": sender,
                      "To": SMS_FROM, "Body": f"what time do you open? ({i})", "NumMedia": "0"}
            headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
            started = time.perf_counter()
            async with http.post(url, data=params, headers=headers) as response:
                await response.read()
            latencies.append(time.perf_counter() - started)
            statuses[response.status] = statuses.get(response.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http, n) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, statuses


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


async def ehr_pending(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count(EhrOutbox.id)).where(EhrOutbox.status == "pending"))
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--bot", choices=["instant", "down"], default="instant")
    parser.add_argument("--ehr", action="store_true", help="also wait until the EHR outbox is empty")
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: a new SQLite file)")
    args = parser.parse_args()
    fake = FakeTwilio(SID, TOKEN).start()
    bot = InstantBot().start() if args.bot == "instant" else None
    warm_up = min(200, args.requests)
    # --bot down: one "reply will follow" per patient (the warm-up told them all already).
    replies = warm_up + args.requests if bot else args.clients
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/sila.db"
        proc, base = start_sila(Path(tmp), fake, database_url, bot)
        try:
            asyncio.run(load(base, warm_up, args.clients))  # warm-up: new patients, pools
            cpu = cpu_seconds(proc.pid)
            started = time.perf_counter()
            latencies, elapsed, statuses = asyncio.run(load(base, args.requests, args.clients, first=10**6))
            cpu_load = cpu_seconds(proc.pid) - cpu
            all_replied = wait_for(lambda: len(fake.messages) >= replies, 300)
            replied, cpu_replied = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu
            if args.ehr:
                ehr_done = wait_for(lambda: asyncio.run(ehr_pending(database_url)) == 0, 1800)
                mirrored, cpu_mirrored = time.perf_counter() - started, cpu_seconds(proc.pid) - cpu
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            fake.stop()
            if bot:
                bot.stop()
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    n = len(latencies)
    print(f"Twilio SMS webhooks, {n} requests from {args.clients} concurrent clients on loopback "
          f"(one Sila process, {database_url.split(':')[0]}, bot {args.bot}): {n / elapsed:.0f} requests/s; response time "
          f"p50 {p(0.50):.1f} ms, p99 {p(0.99):.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms, "
          f"max {ordered[-1] * 1000:.0f} ms; statuses {statuses}")
    print(f"Replies: {len(fake.messages)} of {replies} at the fake Twilio"
          f"{'' if all_replied else ' (gave up waiting)'}, the last {replied:.1f} s after the first webhook "
          f"({n / replied:.0f} webhooks/s answered end to end)")
    print(f"Sila's CPU per webhook: {cpu_load / n * 1000:.2f} ms while the webhooks came in, "
          f"{cpu_replied / n * 1000:.2f} ms up to the last reply (at most {n / cpu_replied:.0f} webhooks/s "
          f"answered per fully available core)")
    if args.ehr:
        print(f"EHR outbox {'empty' if ehr_done else 'still not empty'} {mirrored:.1f} s after the first webhook; "
              f"CPU per webhook up to then {cpu_mirrored / n * 1000:.2f} ms")
    print(f"Machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
