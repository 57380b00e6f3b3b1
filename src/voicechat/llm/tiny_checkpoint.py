"""A tiny Qwen2 checkpoint with hand-set weights, for tests, benchmarks and trying the app offline.

It is the real architecture (``Qwen2ForCausalLM``) with a real byte-level BPE tokenizer file and a
Qwen-style chat template, loaded through the same ``from_pretrained`` path as a downloaded model. Its
weights are not trained; they are set so that the model behaves like a (very dull) assistant:

- Every reply is one of a few fixed sentences of ordinary words, ending with ``<|im_end|>`` (EOS).
- Which sentence depends on the user's words: one attention head looks (from any position) at the
  *topic words* of the prompt (``sea``, ``moon`` ...), whatever their position, and the first word
  of the reply follows the topic. No topic word: the default sentence.
- After that each word has exactly one successor (a chain through the embedding and ``lm_head``),
  with a margin of many logits, so sampling at any ordinary temperature gives the same words as
  greedy decoding: replies are deterministic.

Layout of the hidden state (size ``HIDDEN``): one dimension per chain word (one-hot), a "topic"
flag, a one-hot topic code in the embedding, and the topic code the attention writes back. The MLP
is switched off (zero ``down_proj``). The query uses only the slowest-rotating RoPE dimension, so the
attention to topic words does not depend on how far back they are.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# The reply for each topic word; "" is the default. Each word is used in one sentence only (a word has
# exactly one successor), and every sentence ends with the shared "." whose successor is the end.
REPLIES: dict[str, str] = {
    "": "Hello there friend how may I help you today.",
    "sea": "Waves roll softly over quiet blue water tonight.",
    "moon": "Silver light glows above sleepy hills.",
    "weather": "Warm sunshine will stay until evening.",
    "music": "Gentle piano songs fill every room.",
    "food": "Fresh bread tastes wonderful with butter.",
    "dog": "Puppies love long walks outside.",
}
# Words that make prompts (and the system prompt) encode into whole-word tokens instead of bytes.
COMMON_WORDS = (
    "a about an and answer are as ask at be because briefly but by can code did do does earlier "
    "emoji ends everything explain friendly for from give go had has have he headings helpful hi "
    "if in interrupted is it know like lists live long markdown me more natural never no not "
    "numbers of one or please read rest sentences short so special spell spoken style symbols tell "
    "that the them then there they this three to two understand up us user usually voice was way "
    "we were what when where who why with would write you your yes abbreviations aloud assistant "
    "blocks conversation dash hear heard repeat say said them three usual"
).split()
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS = "<|im_end|>"
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CONTEXT_TOKENS = 1024  # small on purpose: context overflow is easy to reach in tests
CHAIN_LOGIT = 40.0  # a chain word's successor, over every other token
TOPIC_LOGIT = 12.0  # a topic's first word, over the other first words
DEFAULT_BONUS = 3.0  # the default first word, when the prompt has no topic word
VERSION = 1  # bump when the weights or tokenizer change: cached checkpoints are rebuilt


class TinyCheckpointError(Exception):
    pass


def ensure_tiny_llm(out_dir: Path) -> Path:
    """Build the checkpoint in ``out_dir`` unless a current one is there; return ``out_dir``."""
    marker = out_dir / "voicechat-tiny-llm.json"
    if marker.is_file() and json.loads(marker.read_text()).get("version") == VERSION:
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llm-", dir=out_dir.parent))
    try:
        write_tiny_llm(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)  # whole or not at all: a half-built checkpoint is never used
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def write_tiny_llm(out_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.generation import GenerationConfig

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(),
        eos_token=EOS,
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=CONTEXT_TOKENS,
    )
    ids = tokenizer.get_vocab()
    chain: dict[int, int] = {}  # token -> its one successor
    first_words: dict[str, int] = {}  # topic -> the first token of its reply
    for topic, sentence in REPLIES.items():
        tokens = [ids[token] for token in tokenizer.tokenize(" " + sentence)]
        first_words[topic] = tokens[0]
        for word, successor in zip(tokens, tokens[1:]):
            if chain.setdefault(word, successor) != successor:
                raise TinyCheckpointError(f"token {word} has two successors; reply words must be unique")
    period = ids["."]
    chain[period] = ids[EOS]
    newline = tokenizer.convert_tokens_to_ids("Ċ")  # the byte-level newline ends every prompt
    predecessors = sorted({*chain, newline})
    topics = [topic for topic in REPLIES if topic]
    slot = {token: index for index, token in enumerate(predecessors)}
    flag = len(predecessors)
    code = flag + 1  # topic code in the embedding
    seen = code + len(topics)  # topic code written back by the attention
    hidden = seen + len(topics) + 2
    hidden += hidden % 2  # RoPE rotates pairs of dimensions
    slow = hidden - 1  # RoPE's slowest-rotating dimension (with slow - hidden/2): position-independent

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=CONTEXT_TOKENS,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=ids[EOS],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        layer = model.model.layers[0]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm, model.model.norm):
            norm.weight.fill_(1.0)
        embed = model.model.embed_tokens.weight
        for token, index in slot.items():
            embed[token, index] = 1.0
        topic_ids = {}
        for number, topic in enumerate(topics):
            (token,) = tokenizer.tokenize(" " + topic)
            topic_ids[topic] = ids[token]
            embed[ids[token], flag] = 1.0
            embed[ids[token], code + number] = 1.0
        attention = layer.self_attn
        attention.q_proj.bias[slow] = 8.0  # every position asks "where are the topic words?"
        attention.k_proj.weight[slow, flag] = 40.0  # ... and a topic word answers, wherever it is
        for number in range(len(topics)):  # the topic's code, written back small beside the word's own
            attention.v_proj.weight[code + number, code + number] = 1.0
            attention.o_proj.weight[seen + number, code + number] = 0.1
        head = model.lm_head.weight
        for token, successor in chain.items():
            head[successor, slot[token]] = CHAIN_LOGIT
        for topic, first in first_words.items():
            head[first, slot[newline]] = CHAIN_LOGIT + (0.0 if topic else DEFAULT_BONUS)  # no topic: the default
            if topic:
                head[first, seen + topics.index(topic)] = TOPIC_LOGIT
    model.generation_config = GenerationConfig(eos_token_id=[ids[EOS]], pad_token_id=ids["<|endoftext|>"])
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "voicechat-tiny-llm.json").write_text(json.dumps({"version": VERSION, "replies": REPLIES}))


def _tokenizer():  # -> tokenizers.Tokenizer
    """A byte-level BPE whose vocabulary holds every byte, plus whole-word tokens (with their leading
    space, as GPT-2 style tokenizers have them) for the reply words, the topics and common words."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    vocab = {char: index for index, char in enumerate(sorted(alphabet))}
    merges: list[tuple[str, str]] = []
    words = {word.strip(".").lower() for sentence in REPLIES.values() for word in sentence.split()}
    words |= {word.strip(".") for sentence in REPLIES.values() for word in sentence.split()}  # capitalised
    words |= set(REPLIES) - {""}
    words |= set(COMMON_WORDS)
    for word in sorted(words):
        symbols = list("Ġ" + word)
        current = symbols[0]
        for symbol in symbols[1:]:
            merged = current + symbol
            if merged not in vocab:
                merges.append((current, symbol))
                vocab[merged] = len(vocab)
            current = merged
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL])
    return tokenizer
