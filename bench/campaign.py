"""A 10,000-recipient campaign through the outbox to the fake Twilio server.

Sila runs as its own process (`sila serve`, SMS channel); the fake Twilio runs in this process and
notes when each message arrives. Two runs on one store:
1. throttling off (SILA_SMS_RATE=0): messages per second from the first to the last arrival, and
   from the campaign's start to the last arrival (deciding, queueing and sending);
2. a 10 per second throttle (SILA_SMS_RATE=10) on a smaller campaign: the achieved rate.
Peak memory is the Sila process's high-water mark (VmHWM). Prints figures; asserts nothing.
Usage: python -m bench.campaign [--recipients 10000] [--throttled 300] [--database-url …]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from crm_store.db import create_engine, sessionmaker
from crm_store.models import Campaign, ChannelIdentity, Consent, ConsentPurpose, ConsentStatus, Patient, PatientTag
from tests.campaigns.conftest import SID, TOKEN
from tests.campaigns.worker import Worker
from tests.fakes.twilio_server import FakeTwilio


class TimedTwilio(FakeTwilio):
    """The fake Twilio, noting when each accepted message arrived."""

    def __post_init__(self):
        super().__post_init__()
        self.arrivals: list[float] = []

    async def _create_message(self, request):
        response = await super()._create_message(request)
        if response.status == 201:
            self.arrivals.append(time.monotonic())
        return response


async def populate(database_url: str, count: int, throttled: int) -> None:
    engine = create_engine(database_url)
    async with sessionmaker(engine)() as session:
        for start in range(0, count, 2000):
            chunk = range(start, min(count, start + 2000))
            await session.execute(insert(Patient), [{"given_name_en": f"Patient {i}", "given_name_ar": f"مريض {i}",
                                                     "preferred_language": "ar" if i % 3 else "en",
                                                     "phone": f"+9665{i:08d}"} for i in chunk])
        ids = (await session.scalars(select(Patient.id).order_by(Patient.id))).all()
        phones = dict((await session.execute(select(Patient.id, Patient.phone))).all())
        for start in range(0, len(ids), 2000):
            chunk = ids[start:start + 2000]
            await session.execute(insert(ChannelIdentity), [{"patient_id": p, "channel": "sms", "address": phones[p]}
                                                             for p in chunk])
            await session.execute(insert(Consent), [
                {"patient_id": p, "channel": "sms", "purpose": ConsentPurpose.marketing,
                 "status": ConsentStatus.granted, "source": "bench"} for p in chunk])
        await session.execute(insert(PatientTag), [{"patient_id": p, "tag": "throttle"} for p in ids[:throttled]])
        await session.commit()
    await engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (a figure a busy machine does not distort as much)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def campaign_status(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    async with sessionmaker(engine)() as session:
        rows = dict((await session.execute(select(Campaign.name, Campaign.status))).all())
    await engine.dispose()
    return rows


async def run(worker: Worker, fake: TimedTwilio, name: str, segment: str, expected: int, timeout: float) -> dict:
    fake.arrivals.clear()
    worker.start()
    cpu_before = cpu_seconds(worker.process.pid)
    started = time.monotonic()
    await asyncio.to_thread(worker.sila, "campaigns", "create", name, "--segment", segment, "--template", "News",
                            "--channel", "sms", "--now")
    deadline = started + timeout
    while len(fake.arrivals) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    arrivals = list(fake.arrivals)
    memory = peak_memory_mib(worker.process.pid)
    cpu = cpu_seconds(worker.process.pid) - cpu_before
    worker.stop(signal.SIGTERM)
    first, last = (arrivals[0], arrivals[-1]) if arrivals else (started, started)
    sending = (len(arrivals) - 1) / (last - first) if len(arrivals) > 1 and last > first else float("nan")
    return {"messages": len(arrivals), "expected": expected, "end_to_end_s": round(last - started, 2),
            "end_to_end_rate": round(len(arrivals) / (last - started), 1) if last > started else None,
            "sending_rate": round(sending, 1), "peak_memory_mib": round(memory, 1),
            "cpu_ms_per_message": round(1000 * cpu / max(1, len(arrivals)), 2),
            "load_average": os.getloadavg()[0]}


async def main(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sila-bench-campaign-"))
    fake = TimedTwilio(SID, TOKEN).start()
    settings = {"SILA_SMS_RATE": "0", "SILA_CAMPAIGN_CONCURRENCY": str(args.concurrency)}
    if args.database_url:
        settings["SILA_DATABASE_URL"] = args.database_url
    worker = Worker(workdir, fake, **settings)
    if args.database_url:
        worker.database_url = args.database_url
    try:
        await asyncio.to_thread(worker.sila, "migrate")
        await populate(worker.database_url, args.recipients, args.throttled)
        await asyncio.to_thread(worker.sila, "campaigns", "template", "News", "--en", "News for {first_name}",
                                "--ar", "أخبار لك يا {first_name}")
        await asyncio.to_thread(worker.sila, "campaigns", "segment", "Everyone", "--filters", "{}")
        await asyncio.to_thread(worker.sila, "campaigns", "segment", "Throttled", "--filters", '{"tags": ["throttle"]}')
        open_run = await run(worker, fake, "Unthrottled", "Everyone", args.recipients, args.timeout)
        worker.env["SILA_SMS_RATE"] = "10"
        throttled = await run(worker, fake, "Throttled", "Throttled", args.throttled, args.timeout)
        statuses = await campaign_status(worker.database_url)
    finally:
        worker.stop(signal.SIGKILL)
        fake.stop()
    backend = "PostgreSQL" if (args.database_url or "").startswith("postgresql") else "SQLite"
    print(f"campaign benchmark ({backend}, {args.recipients} recipients, concurrency {args.concurrency})")
    print(f"  throttling off: {open_run['messages']}/{open_run['expected']} messages; sending "
          f"{open_run['sending_rate']} msg/s (first to last arrival); end to end {open_run['end_to_end_rate']} msg/s "
          f"in {open_run['end_to_end_s']} s; peak memory {open_run['peak_memory_mib']} MiB")
    print(f"  Sila's CPU per message: {open_run['cpu_ms_per_message']} ms (so at most "
          f"{1000 / open_run['cpu_ms_per_message']:.0f} msg/s on one idle core); load average during the run "
          f"{open_run['load_average']:.1f} on {os.cpu_count()} cores")
    error = abs(throttled["sending_rate"] - 10) / 10 * 100
    print(f"  10/s throttle: {throttled['messages']}/{throttled['expected']} messages at {throttled['sending_rate']} "
          f"msg/s ({error:.1f}% from 10/s); peak memory {throttled['peak_memory_mib']} MiB")
    print(f"  campaigns: {statuses}")
    print(json.dumps({"unthrottled": open_run, "throttled": throttled}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=10000)
    parser.add_argument("--throttled", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--database-url", default="")
    asyncio.run(main(parser.parse_args()))
