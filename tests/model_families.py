"""Tiny random-init configs of the decoder families users bring, for the family matrix and its benchmark rows.

Each ``Family`` builds its causal LM (and, where ``transformers`` has one, its ...ForSequenceClassification) from a
config of 2 layers, hidden size 32 and the test tokenizer's vocabulary: a second to build, a few to decode. Windowed
variants use a window of ``WINDOW`` tokens so that prompt+answer is longer than the window. Scaled and soft-capped
logits are set far from 1 (or small) so that skipping them would change the distribution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import transformers

WINDOW = 6
HYBRID = ["sliding_attention", "full_attention"]


@dataclass(frozen=True)
class Family:
    name: str
    config: str  # class name in transformers
    causal_lm: str
    sequence_classifier: str | None
    fields: dict = field(default_factory=dict)
    path: str = "tree"  # the path the load-time check is expected to choose
    common: bool = True  # take the Llama-style size fields below

    def make_config(self, vocab_size: int, **extra):
        fields = dict(self.fields)
        if self.common:
            fields = {**_COMMON, **fields}
        tokens = {"vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
        if "text_config" in fields:  # a multimodal checkpoint: the vocabulary belongs to its language model
            fields["text_config"] = {**fields["text_config"], **tokens}
            tokens = {}
        fields.update(tokens, **extra)
        return getattr(transformers, self.config)(**fields)

    def build(self, vocab_size: int, seed: int = 0, reward_model: bool = False, **extra):
        cls = getattr(transformers, self.sequence_classifier if reward_model else self.causal_lm)
        config = self.make_config(vocab_size, **({"num_labels": 1} if reward_model else {}), **extra)
        torch.manual_seed(seed)
        model = cls(config).eval()
        if not reward_model:
            model.generation_config.eos_token_id = None  # fixed-length answers: no early stop in the comparisons
            model.generation_config.pad_token_id = 0
        return model


_COMMON = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
_MOE = {"num_local_experts": 4, "num_experts_per_tok": 2}


def _gemma3_multimodal() -> dict:
    text = dict(
        _COMMON,
        head_dim=8,
        sliding_window=WINDOW,
        layer_types=HYBRID,
        final_logit_softcapping=0.5,
        query_pre_attn_scalar=8,
    )
    vision = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 28,
        "patch_size": 14,
    }
    return {"text_config": text, "vision_config": vision, "mm_tokens_per_image": 4}


FAMILIES = [
    Family("llama", "LlamaConfig", "LlamaForCausalLM", "LlamaForSequenceClassification"),
    Family(
        "llama3-rope",
        "LlamaConfig",
        "LlamaForCausalLM",
        "LlamaForSequenceClassification",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ),
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification"),
    Family(
        "qwen2-window",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        "Qwen2ForSequenceClassification",
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
    ),
    Family("qwen3", "Qwen3Config", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification", {"head_dim": 8}),
    Family(
        "qwen3-moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        "Qwen3MoeForSequenceClassification",
        {"head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
    Family(
        "mistral", "MistralConfig", "MistralForCausalLM", "MistralForSequenceClassification", {"sliding_window": None}
    ),
    Family(
        "mistral-v0.1-window",
        "MistralConfig",
        "MistralForCausalLM",
        "MistralForSequenceClassification",
        {"sliding_window": WINDOW},
    ),
    Family(
        "ministral",
        "MinistralConfig",
        "MinistralForCausalLM",
        "MinistralForSequenceClassification",
        {"head_dim": 8, "sliding_window": WINDOW, "layer_types": HYBRID},
    ),
    Family(
        "mixtral",
        "MixtralConfig",
        "MixtralForCausalLM",
        "MixtralForSequenceClassification",
        dict(_MOE, sliding_window=None),
    ),
    Family(
        "mixtral-window",
        "MixtralConfig",
        "MixtralForCausalLM",
        "MixtralForSequenceClassification",
        dict(_MOE, sliding_window=WINDOW),
    ),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM", "GemmaForSequenceClassification", {"head_dim": 8}),
    Family(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        "Gemma2ForSequenceClassification",
        {
            "head_dim": 8,
            "sliding_window": WINDOW,
            "layer_types": HYBRID,
            "final_logit_softcapping": 0.5,
            "attn_logit_softcapping": 5.0,
            "query_pre_attn_scalar": 8,
        },
    ),
    Family(
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        "Gemma3TextForSequenceClassification",
        {
            "head_dim": 8,
            "sliding_window": WINDOW,
            "layer_types": HYBRID,
            "final_logit_softcapping": 0.5,
            "query_pre_attn_scalar": 8,
        },
    ),
    Family(
        "gemma3-multimodal",
        "Gemma3Config",
        "Gemma3ForConditionalGeneration",
        "Gemma3ForSequenceClassification",
        _gemma3_multimodal(),
        common=False,
    ),
    Family("phi", "PhiConfig", "PhiForCausalLM", "PhiForSequenceClassification", {"partial_rotary_factor": 0.5}),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", "Phi3ForSequenceClassification", {"sliding_window": None}),
    Family("phi3-window", "Phi3Config", "Phi3ForCausalLM", "Phi3ForSequenceClassification", {"sliding_window": WINDOW}),
    Family(
        "gpt2",
        "GPT2Config",
        "GPT2LMHeadModel",
        "GPT2ForSequenceClassification",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256},
        common=False,
    ),
    Family(
        "gpt-neox",
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        "GPTNeoXForSequenceClassification",
        {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 256,
            "rotary_pct": 0.5,
        },
        common=False,
    ),
    Family(
        "gpt-j",
        "GPTJConfig",
        "GPTJForCausalLM",
        "GPTJForSequenceClassification",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "rotary_dim": 4, "n_positions": 256},
        common=False,
    ),
    Family(
        "gpt-bigcode",
        "GPTBigCodeConfig",
        "GPTBigCodeForCausalLM",
        "GPTBigCodeForSequenceClassification",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 256, "multi_query": True},
        common=False,
    ),
    Family(
        "opt",
        "OPTConfig",
        "OPTForCausalLM",
        "OPTForSequenceClassification",
        {
            "hidden_size": 32,
            "ffn_dim": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "word_embed_proj_dim": 32,
            "max_position_embeddings": 256,
        },
        common=False,
    ),
    Family(
        "falcon",
        "FalconConfig",
        "FalconForCausalLM",
        "FalconForSequenceClassification",
        {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4},
        common=False,
    ),
    Family("olmo", "OlmoConfig", "OlmoForCausalLM", None),
    Family("olmo2", "Olmo2Config", "Olmo2ForCausalLM", None),
    Family("olmo3", "Olmo3Config", "Olmo3ForCausalLM", None, {"sliding_window": WINDOW, "layer_types": HYBRID}),
    Family(
        "stablelm",
        "StableLmConfig",
        "StableLmForCausalLM",
        "StableLmForSequenceClassification",
        {"partial_rotary_factor": 0.5},
    ),
    Family("smollm3", "SmolLM3Config", "SmolLM3ForCausalLM", "SmolLM3ForSequenceClassification"),
    Family("glm4", "Glm4Config", "Glm4ForCausalLM", "Glm4ForSequenceClassification", {"head_dim": 8}),
    Family(
        "deepseek-v3",
        "DeepseekV3Config",
        "DeepseekV3ForCausalLM",
        "DeepseekV3ForSequenceClassification",
        {
            "num_key_value_heads": 4,
            "q_lora_rank": 16,
            "kv_lora_rank": 16,
            "qk_rope_head_dim": 4,
            "qk_nope_head_dim": 4,
            "v_head_dim": 8,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "first_k_dense_replace": 1,
            "n_group": 1,
            "topk_group": 1,
        },
    ),
    Family(
        "starcoder2",
        "Starcoder2Config",
        "Starcoder2ForCausalLM",
        "Starcoder2ForSequenceClassification",
        {"sliding_window": None},
    ),
    Family(
        "starcoder2-window",
        "Starcoder2Config",
        "Starcoder2ForCausalLM",
        "Starcoder2ForSequenceClassification",
        {"sliding_window": WINDOW},
    ),
    Family(
        "exaone4",
        "Exaone4Config",
        "Exaone4ForCausalLM",
        "Exaone4ForSequenceClassification",
        {"sliding_window": WINDOW, "layer_types": HYBRID},
    ),
    Family(
        "gpt-oss",
        "GptOssConfig",
        "GptOssForCausalLM",
        "GptOssForSequenceClassification",
        dict(_MOE, head_dim=8, sliding_window=WINDOW, layer_types=HYBRID),
    ),
    Family("cohere", "CohereConfig", "CohereForCausalLM", None, {"logit_scale": 16.0}),
    Family(
        "cohere2",
        "Cohere2Config",
        "Cohere2ForCausalLM",
        None,
        {"logit_scale": 16.0, "sliding_window": WINDOW, "layer_types": HYBRID},
    ),
    Family("granite", "GraniteConfig", "GraniteForCausalLM", None, {"logits_scaling": 8.0}),
    Family(
        "bloom",
        "BloomConfig",
        "BloomForCausalLM",
        "BloomForSequenceClassification",
        {"hidden_size": 32, "n_layer": 2, "n_head": 4},
        path="general",
        common=False,
    ),
    Family(
        "mpt",
        "MptConfig",
        "MptForCausalLM",
        "MptForSequenceClassification",
        {"d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 256, "expansion_ratio": 2},
        path="general",
        common=False,
    ),
    # Popular families beyond the list.
    Family(
        "qwen2-moe",
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        "Qwen2MoeForSequenceClassification",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
        },
    ),
    Family("olmoe", "OlmoeConfig", "OlmoeForCausalLM", None, {"num_experts": 4, "num_experts_per_tok": 2}),
    Family("granitemoe", "GraniteMoeConfig", "GraniteMoeForCausalLM", None, dict(_MOE, logits_scaling=8.0)),
    Family(
        "phimoe",
        "PhimoeConfig",
        "PhimoeForCausalLM",
        "PhimoeForSequenceClassification",
        dict(_MOE, sliding_window=None),
    ),
    Family("ernie4.5", "Ernie4_5Config", "Ernie4_5ForCausalLM", None, {"head_dim": 8}),
    Family("seed-oss", "SeedOssConfig", "SeedOssForCausalLM", "SeedOssForSequenceClassification", {"head_dim": 8}),
    Family("helium", "HeliumConfig", "HeliumForCausalLM", "HeliumForSequenceClassification", {"head_dim": 8}),
    Family(
        "glm4-moe",
        "Glm4MoeConfig",
        "Glm4MoeForCausalLM",
        None,
        {
            "head_dim": 8,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "first_k_dense_replace": 1,
            "n_group": 1,
            "topk_group": 1,
        },
    ),
    Family(
        "llama4-chunked",
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        None,
        {
            "head_dim": 8,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "intermediate_size_mlp": 64,
            "attention_chunk_size": WINDOW,
        },
        path="general",
    ),
    Family(
        "qwen3-next",
        "Qwen3NextConfig",
        "Qwen3NextForCausalLM",
        "Qwen3NextForSequenceClassification",
        {
            "head_dim": 8,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
            "linear_num_value_heads": 2,
            "linear_num_key_heads": 2,
            "linear_key_head_dim": 8,
            "linear_value_head_dim": 8,
            "layer_types": ["linear_attention", "full_attention"],
        },
        path="general",
    ),
    Family(
        "falcon-h1",
        "FalconH1Config",
        "FalconH1ForCausalLM",
        None,
        {
            "head_dim": 8,
            "mamba_d_ssm": 32,
            "mamba_n_heads": 4,
            "mamba_d_head": 8,
            "mamba_n_groups": 1,
            "mamba_d_state": 8,
            "mamba_chunk_size": 8,
        },
        path="general",
    ),
    Family("lfm2", "Lfm2Config", "Lfm2ForCausalLM", None, {"layer_types": ["conv", "full_attention"]}, path="general"),
]
FAMILY_BY_NAME = {family.name: family for family in FAMILIES}
