"""``panda-chat serve``: an OpenAI-compatible HTTP server over ChatPanda and the model's batch scheduler."""

from panda_chat.server.app import ServerSettings, WithholdErrorMessages, create_app

__all__ = ["ServerSettings", "WithholdErrorMessages", "create_app"]
