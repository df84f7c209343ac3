"""panda-chat: personalise LLM answers at decoding time (PANDA), per user, with no fine-tuning."""

__version__ = "0.1.0"
