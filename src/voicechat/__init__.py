"""RealtimeVoiceChat, Chatterbox edition."""

__version__ = "0.1.0"
