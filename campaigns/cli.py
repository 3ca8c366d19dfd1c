"""`sila campaigns …`: segments, templates, campaigns and automations from the command line.

The command writes the shared schedule (the job store) and the database; the running Sila workers
notice within SILA_CAMPAIGN_POLL seconds and do the sending."""
from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from bot.settings import get_settings
from campaigns import metrics, segments
from campaigns.defaults import ensure_defaults
from campaigns.runtime import CampaignRuntime
from campaigns.scheduler import Scheduler
from crm_store.db import create_engine, sessionmaker
from crm_store.models import AutomationRule, Campaign, CampaignTemplate, Patient, PatientTag, Segment


class _Offline:
    """The parts of a hub the campaign runtime needs, without serving anything."""

    def __init__(self, settings, sessions):
        self.settings, self.sessions = settings, sessions
        self.adapters, self.outbox, self.router = {}, None, None


def _run(work) -> int:
    async def main() -> int:
        settings = get_settings()
        engine = create_engine(settings.database_url)
        runtime = CampaignRuntime(_Offline(settings, sessionmaker(engine)))
        runtime.passive = True
        runtime.scheduler = Scheduler(settings.database_url, asyncio.get_running_loop(), runtime,
                                      misfire_grace=settings.campaign_misfire_grace)
        await asyncio.to_thread(runtime.scheduler.start, paused=True)
        try:
            return await work(runtime)
        finally:
            await asyncio.to_thread(runtime.scheduler.shutdown)
            await engine.dispose()

    return asyncio.run(main())


def _when(args, zone: str) -> datetime | None:
    if getattr(args, "now", False):
        return datetime.now(ZoneInfo(zone))
    if getattr(args, "at", None):
        return datetime.fromisoformat(args.at).replace(tzinfo=ZoneInfo(zone))
    return None


async def _by_name(session, model, value: str):
    row = await session.get(model, int(value)) if value.isdigit() else None
    return row or await session.scalar(select(model).where(model.name == value))


def _segment(args) -> int:
    async def work(rt) -> int:
        filters = segments.parse_filters(json.loads(args.filters))
        async with rt.sessions() as session:
            segment = await session.scalar(select(Segment).where(Segment.name == args.name))
            if segment is None:
                segment = Segment(name=args.name, created_by="cli")
                session.add(segment)
            segment.filters = filters.model_dump(mode="json")
            count = await segments.count(session, filters, rt.settings.timezone)
            await session.commit()
        print(f"segment {segment.id} {segment.name!r}: {count} patients")
        return 0

    return _run(work)


def _template(args) -> int:
    async def work(rt) -> int:
        async with rt.sessions() as session:
            template = await session.scalar(select(CampaignTemplate).where(CampaignTemplate.name == args.name))
            if template is None:
                template = CampaignTemplate(name=args.name, channel_bodies={})
                session.add(template)
            template.purpose, template.body_en, template.body_ar = args.purpose, args.en, args.ar
            await session.commit()
        print(f"template {template.id} {template.name!r} ({template.purpose})")
        return 0

    return _run(work)


def _create(args) -> int:
    async def work(rt) -> int:
        async with rt.sessions() as session:
            segment = await _by_name(session, Segment, args.segment)
            template = await _by_name(session, CampaignTemplate, args.template)
            if segment is None or template is None:
                print("no such segment or template", file=sys.stderr)
                return 2
            campaign = Campaign(name=args.name, segment_id=segment.id, template_id=template.id,
                                channels=args.channel, conversion_days=args.conversion_days, created_by="cli")
            session.add(campaign)
            await session.commit()
        when = _when(args, rt.settings.timezone)
        if when is not None:
            await rt.broadcasts.schedule(campaign.id, when)
        scheduled = f" scheduled for {when.isoformat()}" if when else " (draft)"
        print(f"campaign {campaign.id} {campaign.name!r}{scheduled}")
        return 0

    return _run(work)


def _lifecycle(args) -> int:
    async def work(rt) -> int:
        if args.action == "schedule":
            when = _when(args, rt.settings.timezone)
            if when is None:
                print("give --at or --now", file=sys.stderr)
                return 2
            done = await rt.broadcasts.schedule(args.id, when)
        else:
            done = await getattr(rt.broadcasts, args.action)(args.id)
        print(f"campaign {args.id}: {args.action} " + ("done" if done else "refused in its current state"))
        return 0 if done else 1

    return _run(work)


def _list(args) -> int:
    async def work(rt) -> int:
        async with rt.sessions() as session:
            for c in (await session.scalars(select(Campaign).order_by(Campaign.id))).all():
                print(f"{c.id:>5}  {c.status:<9}  {c.run_at.isoformat() if c.run_at else '—':<32}  {c.name}")
        return 0

    return _run(work)


def _show(args) -> int:
    async def work(rt) -> int:
        async with rt.sessions() as session:
            campaign = await session.get(Campaign, args.id)
            if campaign is None:
                print("no such campaign", file=sys.stderr)
                return 2
            funnel = await metrics.funnel(session, args.id)
        print(f"campaign {campaign.id} {campaign.name!r}: {campaign.status}")
        print(json.dumps(funnel.as_dict(), ensure_ascii=False, indent=2))
        return 0

    return _run(work)


def _tag(args) -> int:
    async def work(rt) -> int:
        async with rt.sessions() as session:
            known = set((await session.scalars(select(Patient.id).where(Patient.id.in_(args.patients)))).all())
            if unknown := sorted(set(args.patients) - known):
                print(f"no patient with id {', '.join(map(str, unknown))}", file=sys.stderr)
                return 2
            if args.remove:
                await session.execute(delete(PatientTag).where(PatientTag.tag == args.tag,
                                                               PatientTag.patient_id.in_(args.patients)))
            else:
                dialect = postgresql if session.bind.dialect.name == "postgresql" else sqlite
                await session.execute(dialect.insert(PatientTag).on_conflict_do_nothing(), [
                    {"patient_id": p, "tag": args.tag} for p in args.patients])
            await session.commit()
        print(f"tag {args.tag!r} {'removed from' if args.remove else 'on'} {len(args.patients)} patient(s)")
        return 0

    return _run(work)


def _automations(args) -> int:
    async def work(rt) -> int:
        await ensure_defaults(rt.sessions)
        async with rt.sessions() as session:
            for key, on in [(k, True) for k in args.enable] + [(k, False) for k in args.disable]:
                rule = await session.scalar(select(AutomationRule).where(AutomationRule.key == key))
                if rule is None:
                    print(f"no automation {key!r}", file=sys.stderr)
                    return 2
                rule.enabled, rule.updated_by = on, "cli"
            await session.commit()
            for rule in (await session.scalars(select(AutomationRule).order_by(AutomationRule.id))).all():
                print(f"{'on ' if rule.enabled else 'off'}  {rule.key:<22} {rule.kind:<22} "
                      f"{json.dumps(rule.config, ensure_ascii=False)}")
        return 0

    return _run(work)


def register(commands) -> None:
    """Add `sila campaigns …` to the CLI's subcommands."""
    campaigns = commands.add_parser("campaigns", help="campaigns, segments, templates, automations").add_subparsers(
        dest="campaigns_command", required=True)
    p = campaigns.add_parser("segment", help="save a segment (filters as JSON) and print its count")
    p.add_argument("name")
    p.add_argument("--filters", default="{}", help='e.g. {"languages": ["ar"], "tags": ["vip"]}')
    p.set_defaults(func=_segment)
    p = campaigns.add_parser("template", help="save a template in both languages")
    p.add_argument("name")
    p.add_argument("--en", required=True)
    p.add_argument("--ar", required=True)
    p.add_argument("--purpose", choices=["marketing", "transactional"], default="marketing")
    p.set_defaults(func=_template)
    p = campaigns.add_parser("create", help="create a campaign, and schedule it with --at or --now")
    p.add_argument("name")
    p.add_argument("--segment", required=True, help="name or id")
    p.add_argument("--template", required=True, help="name or id")
    p.add_argument("--channel", action="append", required=True, help="in order of preference (repeatable)")
    p.add_argument("--conversion-days", type=int, default=7)
    p.add_argument("--at", help="hospital time, e.g. 2026-12-01T10:00")
    p.add_argument("--now", action="store_true")
    p.set_defaults(func=_create)
    for action in ("schedule", "pause", "resume", "cancel"):
        p = campaigns.add_parser(action, help=f"{action} a campaign")
        p.add_argument("id", type=int)
        if action == "schedule":
            p.add_argument("--at", help="hospital time, e.g. 2026-12-01T10:00")
            p.add_argument("--now", action="store_true")
        p.set_defaults(func=_lifecycle, action=action)
    campaigns.add_parser("list", help="all campaigns").set_defaults(func=_list)
    p = campaigns.add_parser("show", help="a campaign's funnel")
    p.add_argument("id", type=int)
    p.set_defaults(func=_show)
    p = campaigns.add_parser("tag", help="tag patients (by id) for segments")
    p.add_argument("tag")
    p.add_argument("patients", type=int, nargs="+")
    p.add_argument("--remove", action="store_true")
    p.set_defaults(func=_tag)
    p = campaigns.add_parser("automations", help="list automations; switch them on or off")
    p.add_argument("--enable", action="append", default=[], metavar="KEY")
    p.add_argument("--disable", action="append", default=[], metavar="KEY")
    p.set_defaults(func=_automations)

