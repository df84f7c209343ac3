"""``panda-chat serve``: an OpenAI-compatible HTTP server over ChatPanda and the model's batch scheduler."""

from panda_chat.server.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
