"""Messages between a patient and their care team: a portal thread is a conversation on the
"portal" channel, waiting for a person in the console inbox (never answered by the bot: what a
patient writes to their care team is for their care team)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.base import InboundMessage
from crm_store.models import (
    ChannelIdentity,
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    JourneyEvent,
    Message,
    utcnow,
)
from portal import reach

CHANNEL = "portal"
MAX_TEXT = 2000


async def identity_of(session: AsyncSession, patient_id: int) -> ChannelIdentity | None:
    return await session.scalar(select(ChannelIdentity).where(
        ChannelIdentity.channel == CHANNEL, ChannelIdentity.address == str(patient_id)))


async def _ready(session: AsyncSession, patient_id: int, language: str) -> Conversation:
    """The patient's open portal thread, made to wait for a person (new when there is none)."""
    identity = await identity_of(session, patient_id)
    if identity is None:
        identity = ChannelIdentity(patient_id=patient_id, channel=CHANNEL, address=str(patient_id))
        session.add(identity)
        # Writing to the care team is consent to be answered there.
        session.add(Consent(patient_id=patient_id, channel=CHANNEL, purpose=ConsentPurpose.transactional,
                            status=ConsentStatus.granted, source="inbound:portal"))
        session.add(JourneyEvent(patient_id=patient_id, kind="identity_created", reference=CHANNEL))
        await session.flush()
    conversation = await reach.open_conversation(session, identity, language)
    if conversation.status == ConversationStatus.bot:
        conversation.status, conversation.handoff_reason = ConversationStatus.pending_human, "portal"
        conversation.updated_at = utcnow()
    return conversation


async def post(hub, patient_id: int, text: str, nonce: str, language: str) -> int:
    """Store a patient's portal message for staff; returns the conversation id. The same nonce
    (a form sent twice) stores it once."""
    async with hub.sessions() as session:
        conversation = await _ready(session, patient_id, language)
        await session.commit()
    received = await hub.router.receive(InboundMessage(
        CHANNEL, str(patient_id), text, f"portal:{patient_id}:{nonce}"[:100]))
    return received.conversation_id if not received.duplicate else conversation.id


async def history(session: AsyncSession, patient_id: int, limit: int = 200) -> list[Message]:
    """The patient's portal messages, oldest first (staff's internal notes are never shown)."""
    identity = await identity_of(session, patient_id)
    if identity is None:
        return []
    rows = (await session.scalars(
        select(Message).join(Conversation, Conversation.id == Message.conversation_id)
        .where(Conversation.identity_id == identity.id, Conversation.patient_id == patient_id,
               Message.private.is_(False))
        .order_by(Message.id.desc()).limit(limit))).all()
    return list(reversed(rows))
