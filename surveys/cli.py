"""`sila survey …`: list the surveys with their figures, reload the YAML, send one to a patient."""
from __future__ import annotations

import sys


def _list(args) -> int:
    from sqlalchemy import select

    from bot.cli import _on_store
    from bot.settings import get_settings
    from crm_store.models import Survey
    from surveys import analytics

    async def run(sessions):
        async with sessions() as session:
            rows = []
            for survey in (await session.scalars(select(Survey).order_by(Survey.code))).all():
                report = await analytics.report(session, analytics.Filters(survey=survey.code),
                                                get_settings().timezone, comments=False)
                rows.append((survey, report.overall))
            return rows

    for survey, f in _on_store(run):
        state = "on" if survey.active else "off"
        print(f"{survey.code:<20} v{survey.version} {state:<3} ({survey.source}) sent {f.sent}, answered "
              f"{f.responded} ({f.response_rate if f.response_rate is not None else '—'}%), "
              f"NPS {f.nps.score if f.nps.score is not None else '—'} (n={f.nps.n}), "
              f"CSAT {f.csat.average if f.csat.average is not None else '—'} (n={f.csat.n})")
    return 0


def _load(args) -> int:
    from bot.cli import _on_store
    from bot.settings import get_settings
    from crm_store.content import load_hospital
    from surveys import catalogue
    from surveys.definitions import DefinitionError

    settings = get_settings()

    async def run(sessions):
        async with sessions() as session:
            changed = await catalogue.sync_files(session, load_hospital(settings.hospital_file).get("hospital"),
                                                 settings.survey_definitions_dir)
            await session.commit()
            return changed

    try:
        changed = _on_store(run)
    except DefinitionError as exc:
        print(f"not loaded: {exc}", file=sys.stderr)
        return 2
    print(f"{len(changed)} survey(s) added or changed" + (f": {', '.join(changed)}" if changed else ""))
    return 0


def _send(args) -> int:
    from bot.cli import _on_store
    from bot.settings import get_settings
    from crm_store.content import load_hospital
    from surveys import dispatch

    settings = get_settings()

    async def run(sessions):
        async with sessions() as session:
            result = await dispatch.offer(
                session, args.patient, args.code, reason=args.reason, channel=args.channel,
                channels=settings.channel_names, occasion=args.occasion,
                hospital=load_hospital(settings.hospital_file).get("hospital"),
                expiry_days=settings.survey_expiry_days, unless_active_within=None)
            await session.commit()
            return result

    result = _on_store(run)
    if result.status != "sent":
        print(f"not sent: {result.reason}", file=sys.stderr)
        return 1
    print(f"survey {args.code} #{result.response.id} queued for patient {args.patient} on "
          f"{result.response.channel} (the running hub delivers it)")
    return 0


def add_survey_commands(commands) -> None:
    survey = commands.add_parser("survey", help="patient surveys").add_subparsers(dest="survey_command",
                                                                                 required=True)
    survey.add_parser("list", help="surveys with their figures").set_defaults(func=_list)
    survey.add_parser("load", help="load surveys/definitions/*.yml into the store").set_defaults(func=_load)
    send = survey.add_parser("send", help="send a survey to one patient")
    send.add_argument("code")
    send.add_argument("--patient", type=int, required=True)
    send.add_argument("--channel", help="this channel only (default: where the patient was last seen)")
    send.add_argument("--reason", default="manual", choices=["manual", "campaign", "visit", "chat"])
    send.add_argument("--occasion", help="a key sent once per survey, e.g. campaign:12")
    send.set_defaults(func=_send)
