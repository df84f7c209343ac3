"""What the commands that load models do first: torch's CPU threads, transformers' output, the decoder itself.

Everything here imports torch or transformers inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from panda_chat.decoding import PandaDecoder


def set_threads(threads: int | None) -> None:
    """Small models on a shared CPU: torch's thread pool can cost more than it saves (see the README's numbers)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def quiet_transformers() -> None:
    """Model loading prints progress bars and (for a causal LM loaded as a classifier) a long load report; the
    command's own summary says enough."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def load_decoder(
    base: str, rewards: dict[str, Any], device: str, dtype: str, threads: int | None = None
) -> PandaDecoder:
    """The ``PandaDecoder`` of ``eval`` and ``lambda fit``: ``base`` with ``rewards``, without progress bars."""
    from transformers.utils import logging

    from panda_chat.decoding import PandaDecoder

    set_threads(threads)
    logging.disable_progress_bar()
    return PandaDecoder.from_pretrained(base, rewards=rewards, device=device, dtype=dtype)
