"""``ChatPanda``: the LangChain chat model, personalised per user at decoding time."""

from panda_chat.chat_model.messages import ChatTemplateMissingError, UnsupportedContentError
from panda_chat.chat_model.model import ChatPanda

__all__ = ["ChatPanda", "ChatTemplateMissingError", "UnsupportedContentError"]
