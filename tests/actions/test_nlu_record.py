"""What the NLU understood is written onto the stored patient message, without losing the photo or
voice note the patient sent with it."""
from __future__ import annotations

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions import common
from actions.conversation import ValidateSlotMappings
from bot.settings import Settings
from crm_store.models import ChannelIdentity, Conversation, Message, Patient

PHOTO = {"media": {"url": "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
                   "content_type": "image/jpeg"}}


async def test_the_nlu_result_is_kept_beside_the_media(sessions):
    common.configure(sessions, Settings())
    async with sessions() as session:
        patient = Patient(preferred_language="en")
        session.add(patient)
        await session.flush()
        identity = ChannelIdentity(patient_id=patient.id, channel="whatsapp", address="+966500000001")
        session.add(identity)
        await session.flush()
        conversation = Conversation(patient_id=patient.id, identity_id=identity.id, channel="whatsapp")
        session.add(conversation)
        await session.flush()
        message = Message(conversation_id=conversation.id, channel="whatsapp", direction="in", sender="patient",
                          text="is this rash serious? book me with dermatology", status="received",
                          entities=[PHOTO])
        session.add(message)
        await session.commit()
    tracker = Tracker(
        sender_id=str(conversation.id), slots={"language": "en"},
        latest_message={"text": message.text, "intent": {"name": "book_appointment", "confidence": 0.93},
                        "entities": [{"entity": "department", "value": "dermatology", "start": 36, "end": 47,
                                      "extractor": "DirectoryEntityExtractor"}],
                        "metadata": {"message_id": message.id, "language": "en"}},
        events=[], paused=False, followup_action=None, active_loop={}, latest_action_name="action_listen")
    assert await ValidateSlotMappings().extract_language(CollectingDispatcher(), tracker, {}) == {"language": "en"}
    async with sessions() as session:
        stored = await session.get(Message, message.id)
    assert (stored.intent, stored.confidence) == ("book_appointment", 0.93)
    assert stored.entities == [PHOTO, {"entity": "department", "value": "dermatology", "start": 36, "end": 47,
                                       "extractor": "DirectoryEntityExtractor"}]
