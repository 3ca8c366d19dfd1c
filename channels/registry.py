"""Channel adapters by name; the name is also the adapter's settings key (SILA_CHANNELS).

Modules are imported only when their channel is enabled, so a hub that serves web chat alone
needs none of the providers' libraries loaded."""
from __future__ import annotations

import importlib

ADAPTERS = {
    "webchat": "channels.webchat:WebChatAdapter",
    "sms": "channels.twilio_sms:TwilioSmsAdapter",
    "whatsapp": "channels.twilio_sms:TwilioWhatsAppAdapter",
    "voice": "channels.twilio_voice:TwilioVoiceAdapter",
    "telegram": "channels.telegram:TelegramAdapter",
    "email": "channels.email:EmailAdapter",
    "slack": "channels.slack:SlackAdapter",
    "portal": "channels.portal:PortalAdapter",
}


def adapter_class(name: str):
    if name not in ADAPTERS:
        raise ValueError(f"unknown channel {name!r}; known: {', '.join(ADAPTERS)}")
    module, _, cls = ADAPTERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)
