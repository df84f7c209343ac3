"""Grouped-query attention without copying the keys and values, for the forwards panda-chat runs on a CPU.

``transformers``' SDPA attention repeats every key/value head for each query head it serves (``repeat_kv``: a copy
of the whole cache, per layer, per forward) whenever a forward has several query tokens and an explicit mask, and
uses SDPA's own ``enable_gqa`` only without a mask (it avoids masked GQA on CUDA, where it falls back to the math
kernel). Every tree forward has both: k candidate tokens per row and the 4D tree mask. On a CPU, SDPA's kernel takes
masked GQA directly and gives the same numbers; the copies were half of the attention time of a 16-row step
(1.3 against 0.65 ms per layer at 160 cached slots).

``grouped_sdpa()`` is the scope in which that applies: ``PrefixCache`` enters it around its own forwards. The
``"sdpa"`` entry of ``transformers``' attention registry, while it is ``transformers``' own function, is replaced
once (at import) by ``sdpa_attention``, which outside that scope, or for any case it does not handle, calls the
function it replaced, so every other forward in the process runs exactly as before.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

_active: contextvars.ContextVar[bool] = contextvars.ContextVar("panda_chat_grouped_sdpa", default=False)


@contextmanager
def grouped_sdpa() -> Iterator[None]:
    """Within this scope (this thread or task only), masked multi-token GQA forwards on the CPU skip ``repeat_kv``."""
    token = _active.set(True)
    try:
        yield
    finally:
        _active.reset(token)


def _takes_grouped_path(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> bool:
    groups = getattr(module, "num_key_value_groups", 1)
    return bool(
        _active.get()
        and query.device.type == "cpu"
        and isinstance(attention_mask, torch.Tensor)
        and query.shape[2] > 1
        and isinstance(groups, int)
        and groups > 1
        and key.shape[1] * groups == query.shape[1]
        and key.shape[-1] == value.shape[-1]
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
        and not kwargs.get("output_attentions", False)
    )


def _make_sdpa(replaced: Callable[..., tuple[torch.Tensor, Any]]) -> Callable[..., tuple[torch.Tensor, Any]]:
    def sdpa_attention(
        module: torch.nn.Module,
        query: torch.Tensor,  # (B, heads, q, d)
        key: torch.Tensor,  # (B, kv_heads, kv, d)
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, Any]:
        if not _takes_grouped_path(module, query, key, value, attention_mask, kwargs):
            replaced_now = sdpa_attention.replaced  # type: ignore[attr-defined]  # an attribute, so tests can spy on it
            return replaced_now(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        output = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
        )
        return output.transpose(1, 2).contiguous(), None

    sdpa_attention.replaced = replaced  # type: ignore[attr-defined]
    return sdpa_attention


def _install() -> None:
    """Wrap transformers' own SDPA function, once per process; never an ``"sdpa"`` someone else registered (their
    function runs as they wrote it, and these forwards copy the keys/values as before)."""
    current = cast("Callable[..., tuple[torch.Tensor, Any]]", AttentionInterface._global_mapping["sdpa"])
    if current is sdpa_attention_forward:
        AttentionInterface.register("sdpa", _make_sdpa(current))


_install()
