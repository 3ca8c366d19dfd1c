"""The hub without a bot: idempotent storage, Rasa unreachable, the socket's and the action
endpoint's answers to bad input."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bot.app import HUB, create_app
from bot.settings import Settings
from channels.base import InboundMessage
from crm_store.models import ChannelIdentity, Message, Patient
from tests.fakes.tcp_proxy import _free_port


@pytest.fixture
async def client(aiohttp_client, store_url):
    # Nothing listens on the Rasa port: the hub must keep every message for later.
    settings = Settings(database_url=store_url, rasa_url=f"http://127.0.0.1:{_free_port()}", rasa_timeout=2,
                        actions_token="s3cret", replay_interval=3600)
    return await aiohttp_client(create_app(settings))


async def test_a_retried_message_is_stored_once(client):
    router = client.app[HUB].router
    inbound = InboundMessage("webchat", "token-1", "hello", "m-1")
    first = await router.receive(inbound)
    again = await router.receive(inbound)
    assert again.duplicate and again.message_id == first.message_id
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(Message.id)).where(Message.direction == "in")) == 1
        assert await session.scalar(select(func.count(Patient.id))) == 1


async def test_rasa_unreachable_keeps_messages_and_tells_the_patient_once(client):
    router = client.app[HUB].router
    for n in range(3):
        await router.receive(InboundMessage("webchat", "token-2", f"message {n}", f"m-{n}"))
    async with client.app[HUB].sessions() as session:
        rows = (await session.execute(select(Message.direction, Message.status, Message.sender)
                                      .order_by(Message.id))).all()
    inbound = [r for r in rows if r.direction == "in"]
    told = [r for r in rows if r.direction == "out"]
    assert [r.status for r in inbound] == ["pending_bot"] * 3
    assert len(told) == 1 and told[0].sender == "system"
    assert await router.replay_pending() == 0  # still down: nothing replayed, nothing lost


async def test_the_socket_answers_bad_frames_and_keeps_going(client):
    ws = await client.ws_connect("/webchat/ws")
    await ws.send_json({"type": "hello", "session": "forged-token", "language": "ar"})
    welcome = await ws.receive_json()
    assert welcome["type"] == "welcome" and welcome["session"] != "forged-token" and welcome["history"] == []
    await ws.send_str("{not json")
    assert (await ws.receive_json())["type"] == "error"
    await ws.send_json({"type": "message", "id": "x1", "text": "x" * 2001})
    assert (await ws.receive_json())["type"] == "error"
    await ws.send_json({"type": "message", "id": "x2", "text": "مرحبا"})
    frames = [await ws.receive_json() for _ in range(4)]
    assert [f["type"] for f in frames] == ["typing", "message", "message", "idle"]
    assert frames[1]["direction"] == "in" and frames[1]["id"] == "x2"
    assert "سيصلك الرد" in frames[2]["text"]  # the patient wrote Arabic, so told in Arabic
    await ws.close()
    async with client.app[HUB].sessions() as session:
        assert await session.scalar(select(func.count(ChannelIdentity.id))) == 1


async def test_a_socket_without_hello_is_closed(client):
    ws = await client.ws_connect("/webchat/ws")
    await ws.send_str("hi")
    await ws.receive()
    assert ws.closed and ws.close_code == 4400


@pytest.mark.parametrize("query", ["", "?token=wrong"])
async def test_actions_refuse_callers_without_the_token(client, query):
    response = await client.post(f"/actions/webhook{query}", json={"next_action": "action_greet"})
    assert response.status == 403


async def test_actions_reject_malformed_and_unknown_calls(client):
    response = await client.post("/actions/webhook?token=s3cret", data=b"{oops",
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    response = await client.post("/actions/webhook?token=s3cret", json={
        "next_action": "action_does_not_exist", "tracker": {}, "domain": {}, "version": "3.6.21"})
    assert response.status == 404


async def test_home_page_names_the_hospital_in_both_languages(client):
    html = await (await client.get("/")).text()
    assert "Al Noor Specialist Hospital" in html and "مستشفى النور التخصصي" in html
    assert '<script src="/webchat/sila-chat.js"' in html
    assert (await client.get("/webchat/sila-chat.js")).status == 200
