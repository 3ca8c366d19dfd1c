"""Benchmarks with the real trained model (`make bench`): NLU batch throughput through `sila nlu
parse`, and web chat round trips (message sent → first reply, and → bot done) through the whole
stack. Prints figures; asserts nothing."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bot.nlu.worker import _read_examples
from bot.settings import ROOT
from tests.stack import ChatClient, Stack

UTTERANCES = [text for lang in ("en", "ar") for text, _ in _read_examples(ROOT / f"nlu_data/test/{lang}.yml")]


def nlu_throughput(n: int = 2000) -> None:
    lines = (UTTERANCES * (n // len(UTTERANCES) + 1))[:n]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "nlu", "parse"], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.close()
    first = proc.stdout.readline() and time.perf_counter()
    count = 1 + sum(1 for _ in proc.stdout)
    done = time.perf_counter()
    proc.wait()
    print(f"NLU parse, batch of {count} utterances (en+ar held-out, repeated): "
          f"{(count - 1) / (done - first):.0f} utterances/s after the model loaded "
          f"(load + first parse {first - started:.1f} s)")


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.50):.0f} ms, p95 {p(0.95):.0f} ms, max {ordered[-1] * 1000:.0f} ms (n={len(samples)})"


CONVERSATION = {
    "en": ["hello", "what are your opening hours?", "where are you located?", "do you accept Bupa?",
           "who are your dermatologists?", "when is my appointment?", "thanks"],
    "ar": ["السلام عليكم", "متى تفتحون؟", "وين موقعكم؟", "تقبلون تأمين التعاونية؟", "مين دكاترة الجلدية؟",
           "متى موعدي؟", "شكرا"],
}


async def _round_trips(stack: Stack, clients: int, rounds: int) -> tuple[list[float], list[float]]:
    first_reply, whole_turn = [], []

    async def patient(i: int) -> None:
        lang = "ar" if i % 2 else "en"
        async with ChatClient(stack.base_url, language=lang) as chat:
            for r in range(rounds):
                text = CONVERSATION[lang][r % len(CONVERSATION[lang])]
                started = time.perf_counter()
                message_id = f"bench-{i}-{r}-{time.time_ns()}"
                await chat.ws.send_json({"type": "message", "id": message_id, "text": text})
                got_reply = None
                while True:
                    frame = await chat.ws.receive_json(timeout=30)
                    if frame["type"] == "message" and frame["direction"] == "out" and got_reply is None:
                        got_reply = time.perf_counter() - started
                    if frame["type"] == "idle" and frame["id"] == message_id:
                        break
                first_reply.append(got_reply)
                whole_turn.append(time.perf_counter() - started)

    await asyncio.gather(*(patient(i) for i in range(clients)))
    return first_reply, whole_turn


def webchat_latency() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack.start(Path(tmp))
        try:
            asyncio.run(_round_trips(stack, 1, 7))  # warm-up
            for clients, rounds in ((1, 140), (10, 21)):
                first, whole = asyncio.run(_round_trips(stack, clients, rounds))
                print(f"web chat, {clients} patient(s) at once — first reply: {_percentiles(first)}; "
                      f"whole turn: {_percentiles(whole)}")
        finally:
            stack.stop()


if __name__ == "__main__":
    nlu_throughput()
    webchat_latency()
