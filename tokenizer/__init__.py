"""Byte-level BPE tokenizer of the DeepSeek LLM report: 100,000 ordinary tokens + 15 specials.

Public API (stable; other stages depend on it)
------------------------------------------------
Special tokens, ids counted from ``vocab_size`` (100,000 by default, so ids 100000..100014):

========  ==========================  =========  ==========================================
offset    token                       id (100k)  use
========  ==========================  =========  ==========================================
0         ``<｜begin▁of▁sentence｜>``   100000     BOS, added in front by the post-processor
1         ``<｜end▁of▁sentence｜>``     100001     EOS; also the padding token; ends every
                                                 document in the token shards and every
                                                 assistant answer in chat
2         ``<｜User｜>``                100002     role markers, reserved for chat formats that
3         ``<｜Assistant｜>``           100003     want them; the report's format (below) spells
4         ``<｜System｜>``              100004     the roles as plain text and does not use them
5..14     ``<｜reserved▁0｜>``..``9``   100005..   reserved, never produced
========  ==========================  =========  ==========================================

``BOS``, ``EOS``, ``PAD`` (= ``EOS``), ``USER``, ``ASSISTANT``, ``SYSTEM`` are the token strings and
``SPECIAL_TOKENS`` lists all 15 in id order. ``special_id(tok, name)`` gives an id.

Building and loading
- ``TokenizerConfig``: vocab_size (ordinary tokens, default 100,000), min_frequency, ...
- ``train(texts, config) -> tokenizers.Tokenizer``: ``texts`` is any iterator of strings or of
  lists of strings (batches); memory is bounded by the number of distinct pre-tokens, not by
  the text size. Raises ``ValueError`` if the text cannot fill ``vocab_size`` ordinary tokens
  (the special-token ids must stay at ``vocab_size``..).
- ``training_texts(batches_of_id_text, config, stats)``: the training-text selection (a hashed
  ``sample_fraction`` of documents, stopping at ``max_bytes``), counted into a ``StageStats``.
- ``save(tok, folder)``: writes ``tokenizer.json``, ``tokenizer_config.json``,
  ``special_tokens_map.json`` (BOS added, padding = EOS, the chat template below), loadable by
  ``tokenizers.Tokenizer.from_file`` and ``transformers.PreTrainedTokenizerFast.from_pretrained``
  (or ``AutoTokenizer``); both give the same ids.
- ``load(folder) -> tokenizers.Tokenizer``: the tokenizer with special tokens *never* matched
  inside text (``encode_special_tokens = True``), so text that spells ``<｜end▁of▁sentence｜>``
  is encoded as ordinary bytes. Use ``encode_text`` / ``encode_chat`` on it. ``folder`` is a
  folder or its ``tokenizer.json``, a local path or an object-store URI (through
  ``storage.io``); ``save`` writes to either too. ``tokenizer_json(folder)`` names the file.
- ``load_hf(folder) -> PreTrainedTokenizerFast``: the transformers view of the same folder.

Encoding
- ``encode_text(tok, texts) -> list[list[int]]``: ordinary text to ids, no BOS, no EOS.
- ``encode_document(tok, text) -> list[int]``: a pre-training document: ids + [EOS] (what the
  tokenize stage writes).

Shards (``tokenizer.shards``)
- ``text_shards(inputs)``, ``iter_documents(path, stats)``: the text shards under the inputs and
  their documents in bounded batches; ``TokenizeConfig``; ``tokenize_file(src, dst, ...)``: one
  text shard into one token shard (``id``, ``epoch``, ``input_ids``).

Chat (the report's SFT format, as in DeepSeek LLM's released chat template)::

    <BOS>[{system}\\n\\n]User: {q1}\\n\\nAssistant: {a1}<EOS>User: {q2}\\n\\nAssistant: {a2}<EOS>

- ``format_chat(messages, add_generation_prompt=False) -> str``: the text above (``messages`` are
  ``{"role": "system"|"user"|"assistant", "content": str}``); the generation prompt ends with
  ``"Assistant:"``.
- ``encode_chat(tok, messages, add_generation_prompt=False) -> (input_ids, loss_mask)``: ids of
  the same text, with ``loss_mask[i]`` True exactly on the assistant answer tokens and their EOS
  (loss only on answers, as in the report). Special tokens come only from the format, never
  from message text. Equal to the HF chat template's ids for messages that spell no specials.
"""

from tokenizer.bpe import (
    ASSISTANT,
    BOS,
    EOS,
    PAD,
    SPECIAL_TOKENS,
    SYSTEM,
    USER,
    TokenizerConfig,
    encode_document,
    encode_text,
    load,
    load_hf,
    pre_tokenizer,
    save,
    special_id,
    tokenizer_json,
    train,
    training_texts,
)
from tokenizer.chat import CHAT_TEMPLATE, encode_chat, format_chat

__all__ = [
    "ASSISTANT",
    "BOS",
    "CHAT_TEMPLATE",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "SYSTEM",
    "USER",
    "TokenizerConfig",
    "encode_chat",
    "encode_document",
    "encode_text",
    "format_chat",
    "load",
    "load_hf",
    "pre_tokenizer",
    "save",
    "special_id",
    "tokenizer_json",
    "train",
    "training_texts",
]
