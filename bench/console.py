"""Patient message → staff console latency with many consoles open: the time from a patient sending a
web chat message to each connected console receiving its "activity" event on /console/ws.

Sila runs as its own process (`sila serve`, SQLite in a temporary directory, in-process fan-out).
Rasa is unreachable on purpose: the message is still stored and published to the consoles, which is
all this measures. One staff sign-in; its session cookie is reused by every console (a front desk
has many screens, and the sign-in throttle allows 20 attempts per address per 5 minutes). Messages
are sent one at a time, so each (message, console) pair is one latency. Loopback only; the clocks
are the benchmark's own, which also parses every console's frames in one event loop, so the
figures include that client-side cost. Prints figures; asserts nothing.
Usage: python -m bench.console [--consoles 50] [--messages 200] [--patients 5]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bot.settings import ROOT
from tests.fakes.tcp_proxy import _free_port
from tests.stack import wait_http

USERNAME, PASSWORD = "bench_supervisor", "a long enough bench password"
COOKIE = "sila_console"
TEXTS = ["I'd like to speak to someone at reception, please", "ممكن أكلم موظف الاستقبال؟"]


def start_sila(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SILA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/sila.db",
           "SILA_PORT": str(port), "SILA_RASA_URL": f"http://127.0.0.1:{_free_port()}", "SILA_RASA_TIMEOUT": "2",
           "SILA_REPLAY_INTERVAL": "3600", "SILA_LOG_LEVEL": "ERROR"}
    cli = [sys.executable, "-m", "bot.cli"]
    subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    subprocess.run([*cli, "user", "add", USERNAME, "--role", "supervisor", "--language", "en", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, env=env, cwd=ROOT, check=True, capture_output=True)
    with open(workdir / "sila.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([*cli, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc, workdir / "sila.log", 60)
    except RuntimeError:
        proc.terminate()
        raise
    return proc, base


async def sign_in(http: aiohttp.ClientSession, base: str) -> str:
    page = await (await http.get(f"{base}/console/login")).text()
    csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
    response = await http.post(f"{base}/console/login", allow_redirects=False,
                               data={"_csrf": csrf, "username": USERNAME, "password": PASSWORD})
    assert response.status == 302, response.status
    return response.cookies[COOKIE].value


class Console:
    """One staff screen: records when each "activity" event arrived."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.arrivals, self.seen = ws, [], 0
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            if frame.json().get("type") == "activity":
                self.arrivals.append(time.perf_counter())

    def take(self, since: float) -> float | None:
        """Latency of the first event at or after `since`; later ones belong to the same message."""
        for i in range(self.seen, len(self.arrivals)):
            if self.arrivals[i] >= since:
                self.seen = len(self.arrivals)
                return self.arrivals[i] - since
        return None


class Patient:
    """A web chat patient (the widget's protocol: hello → welcome, then message frames)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, language: str):
        self.http, self.url, self.language = http, base.replace("http", "ws", 1) + "/webchat/ws", language

    async def connect(self) -> "Patient":
        self.ws = await self.http.ws_connect(self.url)
        await self.ws.send_json({"type": "hello", "session": None, "language": self.language})
        welcome = await self.ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome", welcome
        self.drain = asyncio.create_task(self._drain())  # echoes, typing, idle: not measured
        return self

    async def _drain(self) -> None:
        async for _ in self.ws:
            pass

    async def say(self, text: str) -> None:
        await self.ws.send_json({"type": "message", "id": str(uuid.uuid4()), "text": text})


async def measure(base: str, consoles: int, messages: int, patients: int, warmup: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    missed = 0
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        cookie = {"Cookie": f"{COOKIE}={await sign_in(http, base)}"}
        screens = [Console(await http.ws_connect(f"{base.replace('http', 'ws', 1)}/console/ws", headers=cookie))
                   for _ in range(consoles)]
        people = [await Patient(http, base, ("en", "ar")[i % 2]).connect() for i in range(patients)]
        await asyncio.sleep(0.5)
        for n in range(warmup + messages):
            patient = people[n % patients]
            sent = time.perf_counter()
            await patient.say(TEXTS[n % 2])
            pending = list(screens)
            deadline = sent + 10
            got: list[float] = []
            while pending and time.perf_counter() < deadline:
                await asyncio.sleep(0.002)
                still = []
                for screen in pending:
                    latency = screen.take(sent)
                    if latency is None:
                        still.append(screen)
                    else:
                        got.append(latency)
                pending = still
            if n >= warmup:
                latencies += got
                missed += len(pending)
            for screen in pending:
                screen.seen = len(screen.arrivals)
            await asyncio.sleep(0.02)  # let the hub finish with this message (the bot attempt) first
        for thing in (*screens, *people):
            await thing.ws.close()
        await asyncio.gather(*(s.task for s in screens), *(p.drain for p in people), return_exceptions=True)
    return latencies, missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consoles", type=int, default=50)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--patients", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_sila(Path(tmp))
        try:
            latencies, missed = asyncio.run(measure(base, args.consoles, args.messages, args.patients, args.warmup))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    if not latencies:
        print(f"no console received an event ({missed} missed)")
        return
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    print(f"web chat message → console 'activity' event, {args.consoles} consoles, {args.messages} messages "
          f"one at a time from {args.patients} patients (one Sila process, SQLite, bot down): "
          f"p50 {p(0.50):.1f} ms, p95 {p(0.95):.1f} ms, max {ordered[-1] * 1000:.1f} ms "
          f"over {len(latencies)} (message, console) pairs; {missed} not received within 10 s; "
          f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
