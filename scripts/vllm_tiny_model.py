"""Build the tiny Llama that real vLLM serves in the integration tests, offline, in seconds.

Run by ``scripts/vllm-env.sh`` with the vLLM venv's Python (it needs torch, transformers and
tokenizers): ``python scripts/vllm_tiny_model.py OUT_DIR``. The weights are random, so the text
it writes is noise, but vLLM serves it exactly as a real model: batching, paged KV cache, prefix
caching, usage, metrics and KV events are all genuine. Everything is seeded: two builds match.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

VOCAB_SIZE = 4096
SEED = 20240601
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
HEADERS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# Llama-3 shaped, with the special tokens above; ends with the assistant header when asked.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
_PUNCTUATION = [".", ",", "?", "!", ":", ";", " -", "'s"]


def _corpus(lines: int, rng: random.Random) -> Iterator[str]:
    """Pseudo-English: syllable words, digits and punctuation, so BPE learns useful merges."""
    words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)]
    for _ in range(lines):
        parts = []
        for _ in range(rng.randint(4, 24)):
            word = rng.choice(words)
            parts.append(word.capitalize() if rng.random() < 0.1 else word)
            if rng.random() < 0.08:
                parts.append(str(rng.randint(0, 9999)))
        yield " ".join(parts) + rng.choice(_PUNCTUATION)


def build_tokenizer(out: Path) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS, PAD, *HEADERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(20_000, random.Random(SEED)), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(HEADERS),
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


# hidden, FFN, layers, attention heads, KV heads, positions of the tests' tiny model.
TINY_SHAPE = (128, 512, 2, 4, 2, 2048)


def build_model(
    out: Path, tokenizer: object, shape: tuple[int, int, int, int, int, int] = TINY_SHAPE
) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    vocab = len(tokenizer)  # type: ignore[arg-type]
    ids = tokenizer.convert_tokens_to_ids  # type: ignore[attr-defined]
    hidden, ffn, layers, heads, kv_heads, positions = shape
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=ids(BOS),
        eos_token_id=[ids(EOS), ids("<|eot_id|>")],
        pad_token_id=ids(PAD),
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_model(out, build_tokenizer(out))


if __name__ == "__main__":
    main()
