"""The patient portal as a channel: messages between a patient and their care team.

A patient writes in the portal (portal/threads.py stores it through the router, for staff); a
staff reply is "delivered" by publishing it to the patient's open portal pages. A patient who has
no portal page open is told on their preferred channel that a message is waiting, without what it
says (portal/notify.py): the message itself stays behind the portal's sign-in.
"""
from __future__ import annotations

from aiohttp import web

from channels.base import ChannelAdapter, OutboundMessage, ProviderReceipt
from crm_store.models import utcnow


def portal_topic(patient_id: int | str) -> str:
    return f"portal:{patient_id}"


class PortalAdapter(ChannelAdapter):
    name = "portal"
    renders_buttons = False

    def __init__(self, hub):
        self.hub = hub

    @classmethod
    def from_settings(cls, settings, hub) -> "PortalAdapter":
        return cls(hub)  # no provider, no secret

    def routes(self) -> list[web.RouteDef]:
        return []  # the portal's pages are set up by portal.views.setup_portal

    async def deliver(self, message: OutboundMessage) -> ProviderReceipt:
        # The address of a portal identity is the patient's id.
        watchers = self.hub.events.publish(portal_topic(message.recipient), {
            "type": "message", "id": str(message.message_id), "time": utcnow().isoformat()})
        if not watchers:
            from portal.notify import notify_waiting_message

            await notify_waiting_message(self.hub, int(message.recipient), message.message_id)
        return ProviderReceipt("delivered" if watchers else "sent")
