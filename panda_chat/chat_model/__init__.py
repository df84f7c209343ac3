"""``ChatPanda``: the LangChain chat model, personalised per user at decoding time."""

from panda_chat.chat_model.messages import UnsupportedContentError
from panda_chat.chat_model.model import ChatPanda, StreamEnd
from panda_chat.prompt_format import ChatTemplateMissingError

__all__ = ["ChatPanda", "ChatTemplateMissingError", "StreamEnd", "UnsupportedContentError"]
