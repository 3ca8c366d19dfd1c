"""A real `sila serve` process for the restart tests: SMS to the fake Twilio, SQLite on disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.settings import ROOT
from tests.campaigns.conftest import SID, SMS_FROM, TOKEN
from tests.fakes.tcp_proxy import _free_port
from tests.stack import wait_http


class Worker:
    def __init__(self, workdir: Path, fake, **settings: str):
        self.workdir = workdir
        self.port = _free_port()
        self.database_url = f"sqlite+aiosqlite:///{workdir}/sila.db"
        self.env = {**os.environ, "SILA_DATABASE_URL": self.database_url, "SILA_PORT": str(self.port),
                    "SILA_CHANNELS": "sms", "SILA_TWILIO_ACCOUNT_SID": SID, "SILA_TWILIO_AUTH_TOKEN": TOKEN,
                    "SILA_TWILIO_API_URL": fake.url, "SILA_TWILIO_SMS_FROM": SMS_FROM, "SILA_PUBLIC_URL": "",
                    "SILA_RASA_URL": f"http://127.0.0.1:{_free_port()}", "SILA_RASA_TIMEOUT": "2",
                    "SILA_REPLAY_INTERVAL": "3600", "SILA_CAMPAIGN_POLL": "0.5", "SILA_CAMPAIGN_LEASE": "3",
                    "SILA_CAMPAIGN_QUIET_START": "0", "SILA_CAMPAIGN_QUIET_END": "0", "PYTHONPATH": str(ROOT),
                    **settings}
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def sila(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "bot.cli", *args], env=self.env, cwd=ROOT, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> "Worker":
        self.starts += 1
        log = self.workdir / f"sila-{self.starts}.log"
        with open(log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], env=self.env, cwd=ROOT,
                                            stdout=out, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.process, log, 60)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"sila did not stop on signal {sig}:\n{self.log()[-3000:]}") from None
        self.process = None

    def log(self) -> str:
        return "\n".join((self.workdir / f"sila-{n}.log").read_text() for n in range(1, self.starts + 1))
