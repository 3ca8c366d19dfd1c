"""The per-channel rate limiter: sends spaced to the rate, and a patient's answer never waits
behind a campaign's queue."""
from __future__ import annotations

import asyncio

from bot.outbox import RateLimiter


async def test_an_answer_goes_before_a_waiting_campaign():
    limiter = RateLimiter(rate=50)
    order: list[str] = []

    async def send(name: str, urgent: bool) -> None:
        await limiter.wait(urgent=urgent)
        order.append(name)

    campaign = [asyncio.create_task(send(f"promo-{i}", False)) for i in range(6)]
    await asyncio.sleep(0)  # the campaign is queued first
    answer = asyncio.create_task(send("answer", True))
    await asyncio.gather(*campaign, answer)
    assert order.index("answer") <= 1  # at most the one campaign message already going out
    assert [n for n in order if n != "answer"] == [f"promo-{i}" for i in range(6)]  # the rest in order


async def test_sends_are_spaced_to_the_rate_and_a_cancelled_sender_uses_no_slot():
    limiter = RateLimiter(rate=20)
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def send() -> None:
        await limiter.wait()
        times.append(loop.time())

    gone = asyncio.create_task(limiter.wait())
    tasks = [asyncio.create_task(send()) for _ in range(4)]
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(*tasks)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(times) == 4 and min(gaps) >= 0.049  # 1/20 s apart, whatever the machine's load
