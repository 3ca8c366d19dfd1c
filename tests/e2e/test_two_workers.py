"""Two Sila workers sharing PostgreSQL and Redis: a patient's message arriving at one shows up in a
console connected to the other, and the staff reply sent from the other reaches the patient."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.settings import ROOT
from tests.fakes.tcp_proxy import _free_port
from tests.stack import ChatClient

PASSWORD = "a long enough password"


async def _fresh_schema(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture
async def workers(postgres_url, tmp_path):
    await _fresh_schema(postgres_url)
    env = {**os.environ, "SILA_DATABASE_URL": postgres_url, "SILA_REDIS_URL": "redis://127.0.0.1:6379/0",
           "SILA_RASA_URL": f"http://127.0.0.1:{_free_port()}", "SILA_RASA_TIMEOUT": "2",
           "SILA_REPLAY_INTERVAL": "3600"}
    cli = [sys.executable, "-m", "bot.cli"]
    subprocess.run([*cli, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
    subprocess.run([*cli, "user", "add", "huda", "--role", "agent", "--language", "en", "--password-stdin"],
                   input=PASSWORD + "\n", text=True, env=env, cwd=ROOT, check=True, capture_output=True)
    ports, processes = [_free_port(), _free_port()], []
    for port in ports:
        with open(tmp_path / f"sila-{port}.log", "wb") as log:
            processes.append(subprocess.Popen([*cli, "serve"], env={**env, "SILA_PORT": str(port)}, cwd=ROOT,
                                              stdout=log, stderr=subprocess.STDOUT))
    for port in ports:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                await asyncio.sleep(0.25)
    yield [f"http://127.0.0.1:{port}" for port in ports]
    for proc in processes:
        proc.terminate()
        proc.wait(timeout=20)


async def test_a_message_at_one_worker_reaches_a_console_on_the_other(workers):
    worker_a, worker_b = workers
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as staff:
        page = await (await staff.get(f"{worker_b}/console/login")).text()
        csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
        signed_in = await staff.post(f"{worker_b}/console/login", allow_redirects=False,
                                     data={"_csrf": csrf, "username": "huda", "password": PASSWORD})
        assert signed_in.status == 302
        console = await staff.ws_connect(f"{worker_b.replace('http', 'ws')}/console/ws")

        async with ChatClient(worker_a, language="en") as patient:
            await patient.say("hello, is anyone there?")
            event = await console.receive_json(timeout=10)
            assert event["type"] == "activity"
            conversation = event["conversation_id"]

            page = await (await staff.get(f"{worker_b}/console/conversations/{conversation}")).text()
            assert "hello, is anyone there?" in page
            csrf = re.search(r'name="_csrf" value="([^"]+)"', page).group(1)
            await staff.post(f"{worker_b}/console/conversations/{conversation}/reply",
                             data={"_csrf": csrf, "text": "Yes, Huda here from reception."})
            frame = await patient.ws.receive_json(timeout=10)
            while frame.get("direction") != "out" or frame.get("sender") == "system":
                frame = await patient.ws.receive_json(timeout=10)
            assert frame["text"] == "Yes, Huda here from reception."
        await console.close()
