"""The toy tokenizer and chat template: stable ids and shared prefixes for shared messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trunkline
from trunkline.engines import ChatMessage, apply_chat_template, detokenize, tokenize
from trunkline.engines.tokens import FIRST_ORDINARY_ID, VOCAB_SIZE

SYSTEM = ChatMessage("system", "You are the support assistant of ACME Telecom. Be brief.")


def test_tokenize_is_deterministic_and_in_vocabulary() -> None:
    text = "Hello, world! Hello again."
    ids = tokenize(text)
    assert ids == tokenize(text)
    assert all(FIRST_ORDINARY_ID <= token < VOCAB_SIZE for token in ids)


def test_words_punctuation_and_long_words_become_pieces() -> None:
    assert len(tokenize("a b c")) == 3
    assert len(tokenize("stop.")) == 2
    assert len(tokenize("internationalization")) == 5  # 20 characters in pieces of 4
    assert tokenize("") == []


def test_token_ids_are_the_same_in_every_process() -> None:
    code = "from trunkline.engines import tokenize; print(tokenize('cache me if you can, 42'))"
    source_root = str(Path(trunkline.__file__).resolve().parents[1])
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": source_root}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert outputs == {f"{tokenize('cache me if you can, 42')}\n"}


def test_conversations_sharing_first_messages_share_a_token_prefix() -> None:
    first = apply_chat_template([SYSTEM, ChatMessage("user", "My router blinks red.")])
    second = apply_chat_template([SYSTEM, ChatMessage("user", "How do I pay my bill?")])
    system_only = apply_chat_template([SYSTEM])
    shared = len(system_only) - len(apply_chat_template([]))  # the system turn's tokens
    assert first[:shared] == second[:shared]
    assert first != second


def test_a_follow_up_turn_extends_the_previous_prompt() -> None:
    turn_one = [SYSTEM, ChatMessage("user", "Hi")]
    turn_two = [*turn_one, ChatMessage("assistant", "Hello!"), ChatMessage("user", "Bye")]
    one, two = apply_chat_template(turn_one), apply_chat_template(turn_two)
    generation_prompt = len(apply_chat_template([])) - 1  # all but the leading BOS
    without_generation_prompt = len(one) - generation_prompt
    assert two[:without_generation_prompt] == one[:without_generation_prompt]


def test_detokenize_gives_one_stable_word_per_token() -> None:
    text = detokenize([100, 2000, 31999])
    assert text == detokenize([100, 2000, 31999])
    assert len(text.split()) == 3
    assert text.startswith(" ")
    assert detokenize([100]) != detokenize([101])
