"""Home and "My health": the clinical summary the EHR import filled (ehr/summary.py)."""
from __future__ import annotations

from aiohttp import web

from crm_store.models import Message
from ehr.clinical import clinical_summary
from portal import booking, surveys, threads
from portal.views.appointments import appointment_row
from portal.views.base import VISIT, hub, patient_page, render


@patient_page
async def home(request: web.Request) -> web.Response:
    visit = request[VISIT]
    async with hub(request).sessions() as session:
        upcoming, _ = await booking.of_patient(session, visit.acting_id)
        summary = await clinical_summary(session, visit.acting_id, visit.language)
        recent: list[Message] = await threads.history(session, visit.acting_id, limit=20)
        waiting = await surveys.waiting(session, visit.acting_id, visit.language)
    flagged = [r for r in (summary or {}).get("results", []) if r.get("latest") and r.get("abnormal")]
    from_staff = [m for m in recent if m.direction == "out"]
    first = appointment_row(upcoming[0], request) if upcoming else None
    return render(request, "portal_home.html", next_appointment=first, flagged=len(flagged),
                  has_record=summary is not None, last_reply=from_staff[-1] if from_staff else None, surveys=waiting)


@patient_page
async def health(request: web.Request) -> web.Response:
    visit = request[VISIT]
    async with hub(request).sessions() as session:
        summary = await clinical_summary(session, visit.acting_id, visit.language)
    results = (summary or {}).get("results", [])
    return render(request, "portal_health.html", summary=summary,
                  latest=[r for r in results if r.get("latest")], earlier=[r for r in results if not r.get("latest")])


def setup(app: web.Application) -> None:
    app.router.add_routes([web.get("/portal", home), web.get("/portal/health", health)])
