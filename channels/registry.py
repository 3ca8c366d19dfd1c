"""Channel adapters, keyed by name; the name is also the adapter's settings key."""
from channels.webchat import WebChatAdapter

ADAPTERS = {adapter.name: adapter for adapter in (WebChatAdapter,)}
