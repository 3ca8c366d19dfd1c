"""The `sila` command: serve, migrate, seed, staff users, train, the NLU tools, the EHR link."""
from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import logging
import os
import subprocess
import sys

from bot.settings import ROOT, get_settings

RASA_PYTHON = ROOT / ".venv-rasa" / "bin" / "python"
MODEL = ROOT / "models" / "sila.tar.gz"
TRAINING_INPUTS = ["config.yml", "domain.yml", "nlu_data/nlu", "nlu_data/rules.yml", "bot/nlu"]


def _serve(args) -> int:
    from aiohttp import web

    from bot.app import create_app
    from bot.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    print(f"Sila on http://{settings.host}:{settings.port}/ (Rasa expected at {settings.rasa_url})", flush=True)
    app = create_app(settings)
    # The start-up objects (models, mappings, the trained NLU tables) live as long as the process:
    # moved out of the collector's sight, and with fewer young collections, a busy server stops
    # spending its time re-walking them (measured: p99 of webhooks under load down by half).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


def _migrate(args) -> int:
    from crm_store.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database is up to date")
    return 0


def _on_store(work) -> object:
    """Run `work(sessions)` against the configured CRM store and return what it returns."""
    from crm_store.db import create_engine, sessionmaker

    async def run():
        engine = create_engine(get_settings().database_url)
        try:
            return await work(sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _seed(args) -> int:
    from crm_store.seed import seed_hospital

    from crm_store.content import load_hospital
    from ehr import directory

    async def run(sessions) -> dict:
        settings = get_settings()
        async with sessions() as session:
            result = await seed_hospital(session, settings.hospital_file)
        async with sessions() as session:
            result["fhir"] = await directory.publish(session, load_hospital(settings.hospital_file)["hospital"])
            await session.commit()
        return result

    result = _on_store(run)
    print(f"demo hospital: {result['departments']} departments, {result['practitioners']} practitioners, "
          f"{result['slots_added']} new slots; {result['fhir']} FHIR directory resources written")
    return 0


def _user_add(args) -> int:
    import getpass

    from crm_store.models import StaffRole, StaffUser
    from inbox.security import hash_password

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("Password: ")
    if len(password) < 12:
        print("a staff password needs at least 12 characters", file=sys.stderr)
        return 2

    async def run(sessions) -> None:
        async with sessions() as session:
            session.add(StaffUser(username=args.username, display_name=args.name or args.username,
                                  password_hash=hash_password(password), role=StaffRole(args.role),
                                  language=args.language))
            await session.commit()

    _on_store(run)
    print(f"staff user {args.username} ({args.role}) added")
    return 0


def _ehr_import(args) -> int:
    from pathlib import Path

    from ehr.importer import BundleError, import_path

    def progress(number, total, file, report):
        print(f"[{number}/{total}] {file.name}: {report.resources} resources "
              f"({report.created} new, {report.updated} updated, {report.unchanged} unchanged)", flush=True)

    try:
        report = _on_store(lambda sessions: import_path(sessions, Path(args.path), region=args.region,
                                                        progress=progress))
    except BundleError as exc:
        print(f"import stopped: {exc}", file=sys.stderr)
        return 2
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.by_type.items()))
    print(f"imported {report.files} file(s), {report.resources} resources: {report.created} new, "
          f"{report.updated} updated, {report.unchanged} unchanged; {len(set(report.patients))} patient(s)")
    print(f"  {kinds}")
    return 0


def _ehr_status(args) -> int:
    from ehr import sync

    async def run(sessions):
        async with sessions() as session:
            return await sync.status(session)

    state = _on_store(run)
    print(f"EHR writes: {state.pending} pending, {state.failed} failed, {state.done} done")
    if state.oldest_pending:
        print(f"  oldest pending since {state.oldest_pending.isoformat(timespec='seconds')}")
    if state.last_error:
        print(f"  last error: {state.last_error}")
    return 1 if state.failed else 0


def _ehr_retry(args) -> int:
    from ehr.sync import EhrSync

    count = _on_store(lambda sessions: EhrSync(sessions, None, {}).retry_failed())
    print(f"{count} failed EHR write(s) queued again")
    return 0


def _fhir_client_add(args) -> int:
    from ehr.api_clients import add_client

    async def run(sessions):
        async with sessions() as session:
            token = await add_client(session, args.name, args.scope)
            await session.commit()
            return token

    token = _on_store(run)
    print(f"FHIR API client {args.name} ({' '.join(args.scope)}); its bearer token, shown once:")
    print(token)
    return 0


def training_fingerprint() -> str:
    digest = hashlib.sha256()
    for entry in TRAINING_INPUTS:
        path = ROOT / entry
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yml", ".py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _train(args) -> int:
    """Train only when the bot's inputs changed since the model on disk (or when forced)."""
    stamp = MODEL.with_suffix(".fingerprint")
    fingerprint = training_fingerprint()
    if not args.force and MODEL.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        print("model is up to date with config.yml, domain.yml and nlu_data/")
        return 0
    command = [str(RASA_PYTHON), "-m", "rasa", "train", "--config", "config.yml", "--domain", "domain.yml",
               "--data", "nlu_data/nlu", "nlu_data/rules.yml", "--out", "models", "--fixed-model-name", "sila"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env)
    if result.returncode == 0:
        stamp.write_text(fingerprint)
    return result.returncode


def _rasa_worker(module: str, *extra: str) -> int:
    """Run an NLU tool inside Rasa's own environment (Python 3.10), wired to our stdin/stdout."""
    if not MODEL.exists():
        print("no trained model: run `make install` (or `sila train`) first", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([str(RASA_PYTHON), "-m", module, "--model", str(MODEL), *extra], cwd=ROOT,
                          env=env).returncode


def _nlu_parse(args) -> int:
    return _rasa_worker("bot.nlu.worker", "parse")


def _nlu_test(args) -> int:
    return _rasa_worker("bot.nlu.worker", *(["--json"] if args.json else []), "test", *args.paths)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sila", description="Sila, the patient-relationship hub")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the hub (web chat, webhooks, actions)").set_defaults(func=_serve)
    commands.add_parser("migrate", help="bring the CRM store to the newest schema").set_defaults(func=_migrate)
    seed = commands.add_parser("seed", help="load content into the CRM store")
    seed.add_argument("what", choices=["demo"])
    seed.set_defaults(func=_seed)
    user = commands.add_parser("user", help="staff accounts").add_subparsers(dest="user_command", required=True)
    user_add = user.add_parser("add", help="add a staff user (password asked, or read from stdin)")
    user_add.add_argument("username")
    user_add.add_argument("--role", choices=["agent", "supervisor", "marketer", "admin"], required=True)
    user_add.add_argument("--name", default="")
    user_add.add_argument("--language", choices=["ar", "en"], default="ar")
    user_add.add_argument("--password-stdin", action="store_true")
    user_add.set_defaults(func=_user_add)
    train = commands.add_parser("train", help="train the Rasa model when its inputs changed")
    train.add_argument("--force", action="store_true")
    train.set_defaults(func=_train)
    nlu = commands.add_parser("nlu", help="NLU tools").add_subparsers(dest="nlu_command", required=True)
    nlu.add_parser("parse", help="stdin lines → JSON lines").set_defaults(func=_nlu_parse)
    nlu_test = nlu.add_parser("test", help="evaluate on the held-out sets, per language")
    nlu_test.add_argument("paths", nargs="*", default=["nlu_data/test"])
    nlu_test.add_argument("--json", action="store_true", help="one JSON report instead of tables")
    nlu_test.set_defaults(func=_nlu_test)
    ehr = commands.add_parser("ehr", help="the link to the hospital's EHR").add_subparsers(
        dest="ehr_command", required=True)
    ehr_import = ehr.add_parser("import", help="import FHIR bundles (a file or a folder of them)")
    ehr_import.add_argument("path")
    ehr_import.add_argument("--region", default="SA", help="country of national-format phone numbers")
    ehr_import.set_defaults(func=_ehr_import)
    ehr.add_parser("status", help="EHR writes pending and failed").set_defaults(func=_ehr_status)
    ehr.add_parser("retry", help="queue failed EHR writes again").set_defaults(func=_ehr_retry)
    fhir = commands.add_parser("fhir", help="Sila's own FHIR API").add_subparsers(dest="fhir_command", required=True)
    fhir_client = fhir.add_parser("client", help="API clients").add_subparsers(dest="client_command", required=True)
    client_add = fhir_client.add_parser("add", help="add a client and print its bearer token")
    client_add.add_argument("name")
    client_add.add_argument("--scope", action="append", required=True,
                            help="SMART scope, e.g. system/*.read or system/Appointment.write (repeatable)")
    client_add.set_defaults(func=_fhir_client_add)
    # The patient portal (issue 8): guardian links.
    from portal.cli import add_portal_commands
    add_portal_commands(commands)
    # Surveys (issue 7): list, load, send.
    from surveys.cli import add_survey_commands
    add_survey_commands(commands)
    from campaigns.cli import register as register_campaigns  # `sila campaigns …` (issue 6)

    register_campaigns(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
