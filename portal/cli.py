"""`sila portal …`: guardian links (by staff, or from what the EHR import stored)."""
from __future__ import annotations

import asyncio
import sys


def _on_store(work):
    from bot.settings import get_settings
    from crm_store.db import create_engine, sessionmaker

    async def run():
        engine = create_engine(get_settings().database_url)
        try:
            async with sessionmaker(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _guardian_add(args) -> int:
    from portal import guardians

    try:
        _on_store(lambda s: guardians.link(s, args.guardian, args.child, args.relationship, source="staff:cli"))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"patient #{args.guardian} may now act for patient #{args.child} in the portal ({args.relationship})")
    return 0


def _guardian_remove(args) -> int:
    from portal import guardians

    if not _on_store(lambda s: guardians.unlink(s, args.guardian, args.child)):
        print("no such link", file=sys.stderr)
        return 1
    print(f"patient #{args.guardian} no longer acts for patient #{args.child}")
    return 0


def _guardian_list(args) -> int:
    from sqlalchemy import select

    from crm_store.models import GuardianLink

    async def rows(session):
        return (await session.scalars(select(GuardianLink).order_by(GuardianLink.id))).all()

    for row in _on_store(rows):
        state = "ended" if row.ended_at else "active"
        print(f"#{row.guardian_id} → #{row.child_id}  {row.relationship:6} {state:6} {row.source}")
    return 0


def _guardian_from_ehr(args) -> int:
    from portal import guardians

    made = _on_store(lambda s: guardians.link_from_ehr(s, region=args.region))
    print(f"{made} new guardian link(s) from the EHR's RelatedPerson and Patient.contact records")
    return 0


def add_portal_commands(commands) -> None:
    portal = commands.add_parser("portal", help="the patient portal").add_subparsers(dest="portal_command",
                                                                                       required=True)
    guardian = portal.add_parser("guardian", help="guardians acting for a child's record").add_subparsers(
        dest="guardian_command", required=True)
    add = guardian.add_parser("add", help="let a patient act for a child's record")
    add.add_argument("--guardian", type=int, required=True, help="the guardian's patient id")
    add.add_argument("--child", type=int, required=True, help="the child's patient id")
    add.add_argument("--relationship", default="PRN",
                     help="v3 RoleCode: PRN (parent), MTH, FTH, GUARD (legal guardian, kept past 18)…")
    add.set_defaults(func=_guardian_add)
    remove = guardian.add_parser("remove", help="end a guardian link")
    remove.add_argument("--guardian", type=int, required=True)
    remove.add_argument("--child", type=int, required=True)
    remove.set_defaults(func=_guardian_remove)
    guardian.add_parser("list", help="every guardian link").set_defaults(func=_guardian_list)
    from_ehr = guardian.add_parser("from-ehr", help="link parents and guardians named in imported records")
    from_ehr.add_argument("--region", default="SA", help="country of national-format phone numbers")
    from_ehr.set_defaults(func=_guardian_from_ehr)
