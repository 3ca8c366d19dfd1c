"""The whole system for end-to-end tests: Sila and the real Rasa server with the trained model,
as subprocesses, with Rasa reached through a proxy the tests can switch off."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bot.settings import ROOT
from tests.fakes.tcp_proxy import SwitchableProxy, _free_port

MODEL = ROOT / "models" / "sila.tar.gz"


def wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} process exited:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {seconds}s:\n{log.read_text()[-4000:]}")


@dataclass
class Stack:
    workdir: Path
    database_url: str
    sila_port: int
    rasa_port: int
    proxy: SwitchableProxy
    processes: list[subprocess.Popen] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def sila(self, *args: str) -> subprocess.CompletedProcess:
        """Run a `sila` command against this stack's store, as an operator would."""
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, check=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sila_port}"

    @classmethod
    def start(cls, workdir: Path, env: dict[str, str] | None = None, *, rasa: bool = True,
              before_serve=None) -> "Stack":
        """Start Sila and Rasa; `env` adds settings (SILA_CHANNELS, a fake provider's URL…).
        Without `rasa`, Sila alone (as a hospital EHR, say); `before_serve(sila_command, env)` runs
        once the store is migrated and seeded, before Sila starts."""
        if rasa and not MODEL.exists():
            raise RuntimeError("no trained model: `make test` trains it first (make install)")
        database_url = f"sqlite+aiosqlite:///{workdir}/sila.db"
        sila_port, rasa_port = _free_port(), _free_port()
        stack = cls(workdir, database_url, sila_port, rasa_port, SwitchableProxy(rasa_port).start())
        env = {**os.environ, "SILA_DATABASE_URL": database_url, "SILA_PORT": str(sila_port),
               "SILA_RASA_URL": f"http://127.0.0.1:{stack.proxy.port}", "SILA_REPLAY_INTERVAL": "1",
               "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        sila = [sys.executable, "-m", "bot.cli"]
        subprocess.run([*sila, "migrate"], env=env, cwd=ROOT, check=True, capture_output=True)
        subprocess.run([*sila, "seed", "demo"], env=env, cwd=ROOT, check=True, capture_output=True)
        if before_serve:
            before_serve(sila, env)
        stack.env = env
        endpoints = workdir / "endpoints.yml"
        endpoints.write_text(f'action_endpoint:\n  url: "http://127.0.0.1:{sila_port}/actions/webhook"\n')
        stack._spawn("sila", [*sila, "serve"], env)
        if not rasa:
            wait_http(f"{stack.base_url}/healthz", stack.processes[0], workdir / "sila.log", 60)
            return stack
        stack._spawn("rasa", [str(ROOT / ".venv-rasa/bin/python"), "-m", "rasa", "run", "--enable-api",
                              "-i", "127.0.0.1", "-p", str(rasa_port), "-m", str(MODEL), "--endpoints",
                              str(endpoints), "--credentials", str(ROOT / "credentials.yml")], env)
        wait_http(f"{stack.base_url}/healthz", stack.processes[0], workdir / "sila.log", 60)
        wait_http(f"http://127.0.0.1:{rasa_port}/status", stack.processes[1], workdir / "rasa.log", 240)
        return stack

    def _spawn(self, name: str, command: list[str], env: dict) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            self.processes.append(subprocess.Popen(command, env=env, cwd=ROOT, stdout=log,
                                                   stderr=subprocess.STDOUT))

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.proxy.stop()


class ChatClient:
    """A patient in the web chat, speaking the widget's websocket protocol."""

    def __init__(self, base_url: str, language: str = "en", session_token: str | None = None):
        self.url = base_url.replace("http", "ws", 1) + "/webchat/ws"
        self.language = language
        self.session_token = session_token
        self.history: list[dict] = []
        self.transcript: list[str] = []  # every message in and out, as this patient saw it

    async def __aenter__(self) -> "ChatClient":
        self._http = aiohttp.ClientSession()
        await self.connect()
        return self

    async def connect(self) -> None:
        self.ws = await self._http.ws_connect(self.url)
        await self.ws.send_json({"type": "hello", "session": self.session_token, "language": self.language})
        welcome = await self.ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome", welcome
        self.session_token = welcome["session"]
        self.history = welcome["history"]

    async def reconnect(self) -> None:
        await self.ws.close()
        await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self._http.close()

    async def say(self, text: str, timeout: float = 30) -> list[dict]:
        """Send one message; returns the bot's replies once the hub is done with it."""
        message_id = str(uuid.uuid4())
        await self.ws.send_json({"type": "message", "id": message_id, "text": text})
        self.transcript.append(text)
        replies = []
        while True:
            frame = await self.ws.receive_json(timeout=timeout)
            if frame["type"] == "message" and frame["direction"] == "out":
                replies.append(frame)
            elif frame["type"] == "idle" and frame["id"] == message_id:
                self.transcript += [r["text"] for r in replies]
                return replies
            elif frame["type"] == "error":
                raise AssertionError(frame)

    @staticmethod
    def text(replies: list[dict]) -> str:
        return "\n".join(r["text"] for r in replies)
