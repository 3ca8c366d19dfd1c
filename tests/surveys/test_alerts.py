"""A detractor raises an alert for patient relations: the conversation waits for a person in the
inbox (team patient_relations), the console hears of it as of any handoff, and with Slack
configured a notice is posted there — without the patient's words."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from bot.app import HUB, create_app
from channels.base import InboundMessage
from crm_store.models import Conversation, ConversationStatus, StaffRole, SurveyResponse
from tests.fakes.slack_server import CHANNEL_ID, FakeSlack
from tests.surveys.conftest import add_patient, add_staff, send_survey, settings_for, sign_in

TOKEN = "xoxb-fake-survey-token"
COMPLAINT = "The receptionist was rude to my mother"


@pytest.fixture
async def slack():
    server = await FakeSlack(TOKEN).start()
    yield server
    await server.close()


@pytest.fixture
async def client(aiohttp_client, sessions, store_url, fake, slack):
    settings = settings_for(store_url, fake, channels="webchat,slack", slack_bot_token=TOKEN,
                            slack_signing_secret="s" * 32, slack_channel=CHANNEL_ID, slack_api_url=slack.url,
                            default_language="en")
    return await aiohttp_client(create_app(settings, channels=("webchat", "slack")))


async def _detractor(hub) -> SurveyResponse:
    pid = await add_patient(hub, None, channels=("webchat",), name=("Layla", "ليلى"))
    sent = await send_survey(hub, pid)
    for number, said in enumerate(["4", "3", COMPLAINT]):
        await hub.router.receive(InboundMessage("webchat", f"webchat-{pid}", said, f"w-{number}"))
    async with hub.sessions() as session:
        return await session.get(SurveyResponse, sent.response.id)


async def test_a_detractor_reaches_the_inbox_and_slack(client, slack):
    hub = client.app[HUB]
    with hub.events.subscribe("console") as console:
        response = await _detractor(hub)
        handoffs = []
        while not console.empty():
            event = console.get_nowait()
            if event.get("type") == "handoff":
                handoffs.append(event)
    assert (response.status, response.nps, response.alert) == ("completed", 4, "detractor")
    assert handoffs == [{"type": "handoff", "conversation_id": response.conversation_id, "urgent": False}]
    for _ in range(100):
        if slack.posted():
            break
        await asyncio.sleep(0.05)
    [notice] = slack.posted()
    text = notice["params"]["text"]
    assert "Layla" in text and "unhappy after a visit" in text and f"/console/conversations/{response.conversation_id}" in text
    assert COMPLAINT not in text and "rude" not in text  # Slack is outside the record system

    await add_staff(hub, "salma", StaffRole.supervisor)
    await sign_in(client, "salma")
    inbox = await (await client.get("/console?view=needs_human&department=patient_relations")).text()
    assert f"/console/conversations/{response.conversation_id}" in inbox and "detractor" in inbox
    page = await (await client.get(f"/console/conversations/{response.conversation_id}")).text()
    assert "NPS 4" in page and COMPLAINT in page  # the note and the answers, for the follow-up


async def test_a_happy_patient_raises_nothing(client, slack):
    hub = client.app[HUB]
    pid = await add_patient(hub, None, channels=("webchat",))
    sent = await send_survey(hub, pid)
    for number, said in enumerate(["10", "yes", "skip"]):
        await hub.router.receive(InboundMessage("webchat", f"webchat-{pid}", said, f"w-{number}"))
    async with hub.sessions() as session:
        response = await session.get(SurveyResponse, sent.response.id)
        conversation = await session.scalar(select(Conversation).where(Conversation.id == response.conversation_id))
    assert (response.status, response.alert) == ("completed", None)
    assert conversation.status == ConversationStatus.bot
    await asyncio.sleep(0.3)
    assert slack.posted() == []
