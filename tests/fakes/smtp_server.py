"""A real SMTP server for tests: aiosmtpd in its own thread, STARTTLS required with a throwaway
self-signed certificate, every accepted message kept for assertions, failures on demand."""
from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.fakes.tcp_proxy import _free_port


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (it is its own CA); (cert, key)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    authenticated_as: str | None


class _Handler:
    def __init__(self, server: "SmtpServer"):
        self.server = server

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        failure = self.server._take_failure("RCPT")
        if failure:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        failure = self.server._take_failure("DATA")
        if failure:
            return failure
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.server._lock:
            self.server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                                 session.ssl is not None, login))
        return "250 2.0.0 Message accepted for delivery"


class SmtpServer:
    """`SmtpServer(tmp_path).start()`; `fail("RCPT", "550 5.1.1 User unknown")` answers the next
    RCPT (or DATA) with that reply; `received` lists the accepted messages."""

    def __init__(self, workdir: Path, *, username: str = "", password: str = ""):
        self.cert, self.key = make_certificate(workdir)
        self.port = _free_port()
        self.username, self.password = username, password
        self.received: list[Received] = []
        self._failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, server_hostname="localhost",
            tls_context=context, require_starttls=True, enable_SMTPUTF8=True,
            authenticator=self._authenticate if username else None, auth_require_tls=True)

    def start(self) -> "SmtpServer":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def fail(self, stage: str, reply: str, times: int = 1) -> None:
        with self._lock:
            self._failures += [(stage, reply)] * times

    def _take_failure(self, stage: str) -> str | None:
        with self._lock:
            for i, (when, reply) in enumerate(self._failures):
                if when == stage:
                    del self._failures[i]
                    return reply
        return None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == (
            self.username, self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [r.message for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]

    async def wait_for(self, count: int, address: str | None = None, timeout: float = 30) -> list[EmailMessage]:
        """Wait until at least `count` messages (to `address`, if given) have arrived."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages_to(address) if address else [r.message for r in list(self.received)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
