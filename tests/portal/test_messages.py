"""Messages with the care team: a portal message waits for a person in the console inbox; a staff
reply shows in the portal and the patient is told on their own channel, without what it says."""
from __future__ import annotations

import asyncio
import re
from datetime import date

from sqlalchemy import select

from crm_store.models import Conversation, ConversationStatus, JourneyEvent, Message, StaffRole, StaffUser
from inbox.security import hash_password
from tests.portal.conftest import add_patient, eventually
from tests.portal.helpers import PortalUser, csrf_in

PHONE, BORN = "+966501234567", date(1985, 3, 14)
PASSWORD = "correct horse battery"


async def staff_sign_in(client, hub, username: str = "amal") -> None:
    async with hub.sessions() as session:
        session.add(StaffUser(username=username, display_name=username.title(), role=StaffRole.agent,
                              password_hash=hash_password(PASSWORD), language="en"))
        await session.commit()
    page = await (await client.get("/console/login")).text()
    response = await client.post("/console/login", allow_redirects=False, data={
        "_csrf": re.search(r'name="_csrf" value="([^"]+)"', page).group(1), "username": username,
        "password": PASSWORD})
    assert response.status == 302


async def staff_reply(client, conversation_id: int, text: str) -> None:
    path = f"/console/conversations/{conversation_id}"
    csrf = csrf_in(await (await client.get(path)).text())
    response = await client.post(path + "/reply", data={"_csrf": csrf, "text": text}, allow_redirects=False)
    assert response.status == 302


async def test_a_thread_with_the_care_team(client, hub, fake):
    patient = await add_patient(hub, PHONE, BORN, first="Amal", family="Saleh")
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    question = "Should I keep taking my blood pressure tablets before the test?"
    sent = await user.post("/portal/messages", {"text": question, "nonce": "first"})
    assert sent.status == 302
    await user.post("/portal/messages", {"text": question, "nonce": "first"})  # the form sent twice
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation).where(Conversation.channel == "portal"))
        stored = (await session.scalars(select(Message).where(Message.conversation_id == conversation.id))).all()
    assert conversation.patient_id == patient.id and conversation.status == ConversationStatus.pending_human
    assert [(m.text, m.status) for m in stored] == [(question, "routed_human")]  # once, and not for the bot

    await staff_sign_in(client, hub)
    inbox = await (await client.get("/console")).text()
    assert f"/console/conversations/{conversation.id}" in inbox and "Amal" in inbox
    assert question in await (await client.get(f"/console/conversations/{conversation.id}")).text()

    answer = "Yes, keep taking them as usual. Bring the box with you."
    await staff_reply(client, conversation.id, answer)
    page = await (await client.get("/portal/messages")).text()
    assert question in page and answer in page
    # No portal page was open: the patient is told by SMS, with no clinical detail.
    notice = (await fake.wait_for(lambda m: len(m) == 2))[-1]
    assert notice.get("To") == PHONE and "new message from your care team" in notice.get("Body")
    assert "tablets" not in notice.get("Body") and "https://sila.example/portal/messages" in notice.get("Body")

    # A second reply soon after does not send a second notice.
    await staff_reply(client, conversation.id, "See you on Sunday.")
    await asyncio.sleep(0.5)
    assert len(fake.messages) == 2
    async with hub.sessions() as session:
        notices = (await session.scalars(select(JourneyEvent).where(JourneyEvent.kind == "portal_notice"))).all()
    assert len(notices) == 1

    # The patient answers; the agent owns the conversation now, so it goes straight to them.
    await user.post("/portal/messages", {"text": "Thank you!", "nonce": "second"})
    assert "Thank you!" in await (await client.get(f"/console/conversations/{conversation.id}")).text()


async def test_a_reply_reaches_an_open_portal_page_live(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    await user.post("/portal/messages", {"text": "Is the clinic open on Saturday?", "nonce": "n"})
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation).where(Conversation.channel == "portal"))
    async with client.ws_connect("/portal/ws") as ws:
        await eventually(lambda: _watching(hub, conversation.patient_id))
        await staff_sign_in(client, hub)
        await staff_reply(client, conversation.id, "Yes, from 9 to 5.")
        event = await ws.receive_json(timeout=10)
        assert event["type"] == "changed"
    assert "from 9 to 5" in await (await client.get("/portal/messages")).text()
    await asyncio.sleep(0.3)
    assert len(fake.messages) == 1  # only the sign-in code: the patient was looking, no notice needed


async def _watching(hub, patient_id: int) -> bool:
    return hub.events.watchers(f"portal:{patient_id}") > 0


async def test_staff_notes_never_reach_the_portal(client, hub, fake):
    await add_patient(hub, PHONE, BORN)
    user = PortalUser(client, fake)
    await user.sign_in(PHONE, BORN)
    await user.post("/portal/messages", {"text": "A question", "nonce": "n"})
    async with hub.sessions() as session:
        conversation = await session.scalar(select(Conversation).where(Conversation.channel == "portal"))
    await staff_sign_in(client, hub)
    path = f"/console/conversations/{conversation.id}"
    csrf = csrf_in(await (await client.get(path)).text())
    await client.post(path + "/note", data={"_csrf": csrf, "text": "Patient seems anxious; call back"})
    assert "anxious" not in await (await client.get("/portal/messages")).text()


async def test_the_websocket_needs_a_session(client):
    response = await client.get("/portal/ws")
    assert response.status == 401
