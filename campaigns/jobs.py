"""The scheduler's jobs, referenced by name in the job store ("campaigns.jobs:start_campaign"), so a
job saved by one version of Sila is run by the next. The executor passes the worker's runtime and
the time the run was due as keywords; each job begins with a claim, so of several workers only
one does the work."""
from __future__ import annotations

from datetime import datetime


async def start_campaign(campaign_id: int, *, runtime=None, run_time: datetime | None = None) -> bool:
    return await runtime.broadcasts.start(campaign_id)


async def run_automations(*, runtime=None, run_time: datetime | None = None) -> int:
    if not await runtime.claim_run("automations", run_time):
        return 0
    return await runtime.automations.run_once()

