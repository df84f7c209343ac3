"""The PANDA decoding engine: candidates, reward scoring, caches, batching, stopping and streaming."""

from panda_chat.decoding.engine import DecodingError, DecodingOptions, PandaDecoder
from panda_chat.decoding.outputs import FinishReason, GenerationOutput, TextStream

__all__ = ["DecodingError", "DecodingOptions", "FinishReason", "GenerationOutput", "PandaDecoder", "TextStream"]
