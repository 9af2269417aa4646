"""Random-init Llama configurations used by the recipes and benchmarks (no download needed)."""

from __future__ import annotations

from transformers import LlamaConfig


#: name -> (hidden, layers, heads, intermediate).  Sizes are total parameters with a 4096-token vocabulary.
PRESETS = {
    "tiny": (64, 2, 4, 192),  # ~0.6M: CPU tests and the out-of-the-box recipes
    "small": (128, 4, 4, 384),  # ~2M: CPU benchmarks
    "5m": (256, 6, 4, 768),  # 5.1M non-embedding (6.2M with the tied embeddings): Olmix proxies
    "20m": (384, 10, 6, 1024),
    "60m": (640, 11, 10, 1728),
    "150m": (768, 20, 12, 2048),
}


def llama_config(
    preset: str = "tiny", vocab_size: int = 4096, max_position_embeddings: int = 2048, **overrides
) -> LlamaConfig:
    """A LlamaConfig for one of :data:`PRESETS` (``overrides`` set any config field)."""
    if preset not in PRESETS:
        raise ValueError(f"model preset {preset!r} is unknown; use one of {sorted(PRESETS)}.")
    hidden, layers, heads, intermediate = PRESETS[preset]
    values = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return LlamaConfig(**values)
