"""panda-chat: personalise LLM answers at decoding time (PANDA), per user, with no fine-tuning."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """Lazy top-level exports, so ``import panda_chat`` (e.g. for the CLI's --help) does not import torch."""
    if name in ("PandaDecoder", "GenerationOutput", "DecodingOptions", "TextStream"):
        from panda_chat import decoding

        return getattr(decoding, name)
    if name == "ChatPanda":
        from panda_chat.chat_model import ChatPanda

        return ChatPanda
    raise AttributeError(f"module 'panda_chat' has no attribute {name!r}")
