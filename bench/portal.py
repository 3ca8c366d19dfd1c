"""Patient portal response times, and whether a sign-in code request takes as long for a number
Sila does not know as for one it does (it must, or the timing would tell who is registered).

Sila runs as its own process (`sila serve`, SQLite in a temporary directory, SMS through the fake
Twilio server, no Rasa), with the three Synthea patients imported (`sila ehr import`). Gayla Ferry
signs in with the code read from the fake Twilio, then each page is fetched one request at a time.
Code requests: 11 for the imported numbers alternating with 11 for unknown ones, a second apart (the
per-number and per-address limits allow no more). Loopback only. Prints figures; asserts nothing.
Usage: python -m bench.portal [--requests 50]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from yarl import URL

from bot.settings import ROOT
from tests.e2e.phone import SID, TOKEN, twilio_env
from tests.fakes.tcp_proxy import _free_port
from tests.fakes.twilio_server import FakeTwilio
from tests.stack import wait_http

KNOWN = ["+15556058177", "+15558046642", "+15558763430"]  # the imported Synthea patients
GAYLA, GAYLA_BORN = KNOWN[0], "1937-06-03"
PAGES = ["/portal", "/portal/health", "/portal/appointments", "/portal/messages", "/portal/preferences",
         "/portal/data/export"]
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def start_sila(workdir: Path, fake: FakeTwilio) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SILA_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/sila.db",
           "SILA_PORT": str(port), "SILA_RASA_URL": f"http://127.0.0.1:{_free_port()}", "SILA_RASA_TIMEOUT": "2",
           "SILA_REPLAY_INTERVAL": "3600", "SILA_LOG_LEVEL": "ERROR", **twilio_env(fake, "webchat,sms")}
    cli = [sys.executable, "-m", "bot.cli"]
    for step in (["migrate"], ["seed", "demo"], ["ehr", "import", str(ROOT / "tests" / "fixtures" / "fhir")]):
        subprocess.run([*cli, *step], env=env, cwd=ROOT, check=True, capture_output=True)
    with open(workdir / "sila.log", "wb") as log:
        proc = subprocess.Popen([*cli, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc, workdir / "sila.log", 60)
    except RuntimeError:
        proc.terminate()
        raise
    return proc, base


async def ask_code(http: aiohttp.ClientSession, base: str, phone: str) -> float:
    page = await (await http.get(f"{base}/portal/sign-in?lang=en")).text()
    started = time.perf_counter()
    async with http.post(f"{base}/portal/sign-in", data={"_csrf": CSRF.search(page).group(1), "phone": phone,
                                                         "lang": "en"}) as response:
        await response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - started


async def measure(base: str, fake: FakeTwilio, requests: int) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await ask_code(http, base, GAYLA)
        sent = await fake.wait_for(lambda m: any(r.get("To") == GAYLA for r in m))
        code = re.search(r"\b(\d{6})\b", sent[-1].get("Body")).group(1)
        pre = http.cookie_jar.filter_cookies(URL(base + "/portal/"))["sila_portal_pre"].value
        async with http.post(f"{base}/portal/verify", allow_redirects=False, data={
                "_csrf": pre, "phone": GAYLA, "code": code, "birth_date": GAYLA_BORN, "lang": "en"}) as response:
            assert response.status == 302, await response.text()
        for path in PAGES:
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                async with http.get(base + path) as response:
                    body = await response.read()
                    assert response.status == 200, (path, response.status)
                samples.append(time.perf_counter() - started)
            print(f"GET {path:22} {_percentiles(samples)}, {len(body) / 1024:.0f} KiB")
    known, unknown = [], []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # Alternated, and spaced so that one request's background sending is over before the next.
        for phone in KNOWN[1:] * 4 + [GAYLA] * 3:
            known.append(await ask_code(http, base, phone))
            await asyncio.sleep(1.0)
            unknown.append(await ask_code(http, base, f"+9665{random.randrange(10 ** 7, 10 ** 8)}"))
            await asyncio.sleep(1.0)
    print(f"code request, registered number:    {_percentiles(known)}")
    print(f"code request, unregistered number:  {_percentiles(unknown)}")


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.50):6.1f} ms, p95 {p(0.95):6.1f} ms, max {ordered[-1] * 1000:6.1f} ms (n={len(samples)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    fake = FakeTwilio(SID, TOKEN).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc, base = start_sila(Path(tmp), fake)
            try:
                asyncio.run(measure(base, fake, args.requests))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    finally:
        fake.stop()
    print(f"(one Sila process, SQLite; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
