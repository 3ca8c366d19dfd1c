"""EHR import throughput and peak memory (`python -m bench.ehr_import [--copies N] [--postgres URL]`).

The three Synthea fixture bundles are imported as they are, then as N copies with every UUID
replaced (so each copy is a set of new patients, as a real EHR export would be), into a fresh
store; then the same again (idempotent: nothing changes). Prints resources per second and the
process's peak resident memory. Asserts nothing."""
from __future__ import annotations

import argparse
import asyncio
import re
import resource
import tempfile
import time
import uuid
from pathlib import Path

from bot.settings import ROOT
from crm_store.db import create_engine, sessionmaker
from crm_store.migrate import upgrade
from ehr.importer import import_path

BUNDLES = ROOT / "tests" / "fixtures" / "fhir"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _copies(folder: Path, copies: int) -> int:
    """Write `copies` of each bundle with fresh UUIDs (consistently within a copy); returns the file count."""
    for n in range(copies):
        fresh: dict[str, str] = {}
        for path in BUNDLES.glob("*.json"):
            text = UUID.sub(lambda m: fresh.setdefault(m.group(0), str(uuid.uuid4())), path.read_text())
            # Identifiers that are not UUIDs (SSN, licence numbers) would match across copies.
            text = text.replace('"999-', f'"{n:03d}-')
            (folder / f"{n:04d}-{path.name}").write_text(text)
    return copies * 3


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _run(url: str, folder: Path) -> None:
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url)
    sessions = sessionmaker(engine)
    try:
        for label in ("first import", "again (unchanged)"):
            started = time.perf_counter()
            report = await import_path(sessions, folder)
            seconds = time.perf_counter() - started
            print(f"  {label}: {report.resources} resources in {seconds:.2f} s = "
                  f"{report.resources / seconds:.0f} resources/s ({report.created} new, {report.updated} updated, "
                  f"{report.unchanged} unchanged; {len(set(report.patients))} patients); "
                  f"peak RSS {_peak_mib():.0f} MiB")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--postgres", default="", help="also run on this (scratch!) PostgreSQL database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = Path(tmp, "fixtures")
        fixtures.mkdir()
        for path in BUNDLES.glob("*.json"):
            (fixtures / path.name).write_text(path.read_text())
        print("The three Synthea fixture bundles, SQLite:")
        asyncio.run(_run(f"sqlite+aiosqlite:///{tmp}/fixtures.db", fixtures))
        many = Path(tmp, "many")
        many.mkdir()
        files = _copies(many, args.copies)
        print(f"{files} bundles ({args.copies} copies of the three, new UUIDs), SQLite:")
        asyncio.run(_run(f"sqlite+aiosqlite:///{tmp}/many.db", many))
        if args.postgres:
            print(f"{files} bundles, PostgreSQL:")
            asyncio.run(_run(args.postgres, many))


if __name__ == "__main__":
    main()
