"""A channel identity's open conversation: the one every message in or out on that address joins."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_store.models import ChannelIdentity, Conversation, ConversationStatus, JourneyEvent, Patient


async def open_conversation(session: AsyncSession, identity: ChannelIdentity,
                            language: str | None = None) -> Conversation:
    """The newest conversation of `identity` not closed, or a new one (in `language`, else the
    patient's preferred language), recorded on the patient's journey."""
    conversation = await session.scalar(
        select(Conversation).where(Conversation.identity_id == identity.id,
                                   Conversation.status != ConversationStatus.closed)
        .order_by(Conversation.id.desc()).limit(1))
    if conversation is None:
        if language is None:
            language = (await session.get(Patient, identity.patient_id)).preferred_language
        conversation = Conversation(patient_id=identity.patient_id, identity_id=identity.id,
                                    channel=identity.channel, language=language)
        session.add(conversation)
        await session.flush()
        session.add(JourneyEvent(patient_id=identity.patient_id, kind="conversation_started",
                                 reference=str(conversation.id), data={"channel": identity.channel}))
    return conversation
