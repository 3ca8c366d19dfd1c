"""What patients notice while an admin activates a new model: web chat round trips (message sent →
bot done) through the whole stack, before, while and after Rasa swaps its model with
`PUT /model` (as the console's activation does), the time the swap takes, and whether any message
failed or fell back to "the reply will follow". Rasa loads the archive inside its event loop, so
messages arriving during the load wait for it. Prints figures; asserts nothing.
Usage: python -m bench.nlu_activation [--swaps 3] [--gap 0.2]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.settings import ROOT
from nlu_admin.activation import RasaTarget
from tests.stack import ChatClient, Stack


def _summary(samples: list[float]) -> str:
    if not samples:
        return "none"
    ordered = sorted(samples)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return f"p50 {p(0.5):.0f} ms, p95 {p(0.95):.0f} ms, max {ordered[-1] * 1000:.0f} ms (n={len(samples)})"


async def run(stack: Stack, candidate: Path, swaps: int, gap: float) -> None:
    target = RasaTarget((f"http://127.0.0.1:{stack.rasa_port}",), "", 600)
    samples: list[tuple[float, float, str]] = []  # (sent at, round trip, phase)
    windows: list[tuple[float, float]] = []
    stop = asyncio.Event()

    async def patient() -> None:
        async with ChatClient(stack.base_url, language="en") as chat:
            while not stop.is_set():
                sent = time.perf_counter()
                replies = await chat.say("what are your opening hours?", timeout=120)
                took = time.perf_counter() - sent
                text = ChatClient.text(replies)
                samples.append((sent, took, "pending" if "will follow" in text else "ok"))
                await asyncio.sleep(gap)

    async def admin() -> None:
        async with aiohttp.ClientSession() as http:
            for model in [candidate, stack.workdir / "original.tar.gz"] * swaps:
                await asyncio.sleep(5)
                started = time.perf_counter()
                await target.load(http, target.urls[0], model)
                windows.append((started, time.perf_counter()))
            await asyncio.sleep(5)
        stop.set()

    await asyncio.gather(patient(), admin())
    durations = [end - start for start, end in windows]
    during = [took for sent, took, _ in samples
              if any(start - took <= sent <= end for start, end in windows)]
    outside = [took for sent, took, _ in samples
               if not any(start - took <= sent <= end for start, end in windows)]
    pending = sum(1 for _, _, phase in samples if phase == "pending")
    await asyncio.sleep(10)  # the replayer answers what waited
    with sqlite3.connect(stack.workdir / "sila.db") as db:
        unanswered = db.execute("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND status != 'answered'"
                                ).fetchone()[0]
        total = db.execute("SELECT COUNT(*) FROM messages WHERE direction = 'in'").fetchone()[0]
    print(f"model swaps (PUT /model): {len(durations)}, each {_summary(durations)}")
    print(f"web chat round trips outside swaps: {_summary(outside)}")
    print(f"web chat round trips overlapping a swap: {_summary(during)}")
    print(f"messages first answered 'the reply will follow' (Rasa slower than SILA_RASA_TIMEOUT): {pending}; "
          f"patient messages still unanswered 10 s after the last swap: {unanswered} of {total}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sila-bench-activation-") as tmp:
        work = Path(tmp)
        shutil.copy2(ROOT / "models" / "sila.tar.gz", work / "candidate.tar.gz")
        shutil.copy2(ROOT / "models" / "sila.tar.gz", work / "original.tar.gz")
        stack = Stack.start(work)
        try:
            asyncio.run(run(stack, work / "candidate.tar.gz", args.swaps, args.gap))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
