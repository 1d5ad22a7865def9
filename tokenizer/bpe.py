"""The tokenizer itself: pre-tokenizer, BPE training, special tokens, files on disk.

Composed the Hugging Face ``tokenizers`` way, from small named parts: no normalizer (so any
string round-trips byte for byte), the report's pre-tokenizer sequence, a BPE model over the 256
byte symbols, a ByteLevel decoder, and a post-processor that puts BOS in front.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import xxhash
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from curation.stats import StageStats
from storage.errors import MissingInput, UserError

# DeepSeek LLM's special-token spelling: full-width bar U+FF5C and U+2581 for spaces.
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
# The report: "the padding token is the end token".
PAD = EOS
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
SYSTEM = "<｜System｜>"
# The report: 100,000 ordinary + 15 special tokens = 100,015.
NUM_SPECIAL = 15
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, USER, ASSISTANT, SYSTEM) + tuple(
    f"<｜reserved▁{i}｜>" for i in range(NUM_SPECIAL - 5)
)

# The report's pre-tokenizer, in the order of the released tokenizer.json (DESIGN.md):
# newlines alone; letter runs with one optional leading space; punctuation runs with one optional
# leading space; trailing whitespace; CJK/Hangul runs; single digits; then byte-level mapping.
# "Letters" are every alphabet (Latin, Greek, Cyrillic, Arabic, Devanagari...) with their combining
# marks, minus the CJK scripts, which get their own run so a token never mixes CJK with Latin.
# The report lists ASCII and full-width punctuation; we take all of Unicode's P* and S* classes
# (a superset: curly quotes, CJK punctuation, symbols and emoji also stay out of letter tokens).
_CJK = r"\p{Han}\p{Hangul}\p{Hiragana}\p{Katakana}\p{Bopomofo}"
NEWLINE_PATTERN = r"[\r\n]"
LETTERS_PATTERN = r"\s?[[\p{L}\p{M}]&&[^" + _CJK + r"]]+"
PUNCTUATION_PATTERN = r"\s?[\p{P}\p{S}]+"
TRAILING_SPACE_PATTERN = r"\s+$"
CJK_PATTERN = r"[" + _CJK + r"]+"


def pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The report's pre-tokenizer sequence (order matters: each split sees the previous pieces)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(NEWLINE_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(LETTERS_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(PUNCTUATION_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(TRAILING_SPACE_PATTERN), behavior="isolated"),
            pre_tokenizers.Split(Regex(CJK_PATTERN), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            # The splits above did the regex work; ByteLevel only maps bytes to symbols.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


@dataclass
class TokenizerConfig:
    # The report: 100,000 ordinary tokens (ids 0..99,999); the specials follow at 100,000.
    vocab_size: int = 100_000
    # A pair seen once is noise, not a unit worth a token (tokenizers' own default is 0).
    min_frequency: int = 2
    # Text is fed to the trainer in batches of this many documents (bounded memory).
    batch_size: int = 1_000
    # Training text selection (``training_texts``): keep a document with this probability, decided
    # by a hash of (seed, document id) so the choice does not depend on order or worker count...
    sample_fraction: float = 1.0
    seed: int = 0
    # ...and stop once this many UTF-8 bytes were kept (None: no limit).
    max_bytes: int | None = None
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.vocab_size <= 256:
            raise ValueError(f"vocab_size {self.vocab_size} must exceed the 256-byte alphabet")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ValueError(f"sample_fraction {self.sample_fraction} must be in (0, 1]")


def training_texts(
    batches: Iterable[Sequence[tuple[str, str | None]]], config: TokenizerConfig, stats: StageStats
) -> Iterator[list[str]]:
    """Select training text from batches of (id, text): sampled, capped at ``max_bytes``.

    Counts into ``stats`` (each document arriving here must already be counted as seen): kept,
    or dropped as ``empty_text``, ``not_sampled`` or ``over_max_bytes``. Stops reading once the
    byte budget is spent, so a small budget over a large corpus reads little of it.
    """
    budget = config.max_bytes
    used = 0
    threshold = int(config.sample_fraction * 2**64)
    for batch in batches:
        out: list[str] = []
        for k, (doc_id, text) in enumerate(batch):
            if not text:
                stats.drop("empty_text")
                continue
            if config.sample_fraction < 1.0 and xxhash.xxh64_intdigest(f"{config.seed}\x00{doc_id}".encode("utf-8")) >= threshold:
                stats.drop("not_sampled")
                continue
            n = len(text.encode("utf-8"))
            if budget is not None and used + n > budget:
                # This one and the rest of the batch were read; later batches are not.
                stats.drop("over_max_bytes", len(batch) - k)
                stats.add("stopped_at_max_bytes")
                if out:
                    yield out
                return
            used += n
            stats.kept()
            stats.add("text_bytes", n)
            out.append(text)
        if out:
            yield out


def _empty_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    return tok


def _batches(texts: Iterable[str | Sequence[str]], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in texts:
        if isinstance(item, str):
            batch.append(item)
        else:
            batch.extend(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class CorpusTooSmall(UserError, ValueError):
    """The training text has fewer distinct merges than the vocabulary asks for."""


def train(texts: Iterable[str | Sequence[str]], config: TokenizerConfig | None = None, length: int | None = None) -> Tokenizer:
    """Train the byte-level BPE on an iterator of texts (or batches of texts); add the specials.

    ``length`` (number of texts, if known) only drives the trainer's progress bar.
    """
    cfg = config or TokenizerConfig()
    tok = _empty_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        show_progress=cfg.show_progress,
        # All 256 bytes, seen in the text or not, so any input encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_batches(texts, cfg.batch_size), trainer=trainer, length=length)
    got = tok.get_vocab_size()
    if got != cfg.vocab_size:
        raise CorpusTooSmall(
            f"the training text filled only {got:,} of {cfg.vocab_size:,} ordinary tokens "
            f"(min_frequency={cfg.min_frequency}); train on more text or lower vocab_size, since the "
            "special tokens must sit at ids vocab_size.."
        )
    _add_specials(tok)
    return tok


def _add_specials(tok: Tokenizer) -> None:
    n = tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert tok.token_to_id(BOS) == n and tok.token_to_id(SPECIAL_TOKENS[-1]) == n + NUM_SPECIAL - 1
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, n)]
    )


def special_id(tok: Tokenizer, token: str) -> int:
    i = tok.token_to_id(token)
    if i is None:
        raise KeyError(f"{token!r} is not a special token of this tokenizer")
    return i


def tokenizer_files(tok: Tokenizer) -> dict[str, bytes]:
    """The files of a saved tokenizer folder, by name (written by ``save`` or atomically by a stage)."""
    from tokenizer.chat import CHAT_TEMPLATE

    n = special_id(tok, BOS)
    specials = {
        str(n + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        # The report's context length.
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
        "added_tokens_decoder": specials,
        "additional_special_tokens": list(SPECIAL_TOKENS[2:]),
        "chat_template": CHAT_TEMPLATE,
    }
    special_map = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": list(SPECIAL_TOKENS[2:])}
    return {
        "tokenizer.json": tok.to_str(pretty=True).encode("utf-8"),
        "tokenizer_config.json": (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
        "special_tokens_map.json": (json.dumps(special_map, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }


def save(tok: Tokenizer, folder: str) -> None:
    """Write the tokenizer folder (a local folder or an object-store prefix; each file complete or absent)."""
    from storage import io

    for name, data in tokenizer_files(tok).items():
        io.write_bytes(data, io.join(folder, name))


def tokenizer_json(path: str) -> str:
    """``tokenizer.json`` of a tokenizer folder, or the path itself when it names that file."""
    from storage import io

    return path if path.endswith(".json") else io.join(path, "tokenizer.json")


def load(folder: str) -> Tokenizer:
    """The saved tokenizer (a folder or its tokenizer.json; local or an object-store URI), with
    special tokens never matched inside ordinary text."""
    from storage import io

    path = tokenizer_json(folder)
    try:
        with io.open_input(path) as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise MissingInput(f"tokenizer {path} not found: train one with `python -m pipelines train-tokenizer` "
                           "(make tokenizer) or fix --tokenizer") from None
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # the tokenizers library raises a bare Exception for a malformed file
        raise UserError(f"tokenizer {path} cannot be read ({str(e)[:200]}); train it again with `python -m pipelines train-tokenizer`") from None
    # Text that spells "<｜end▁of▁sentence｜>" is data, not a control token.
    tok.encode_special_tokens = True
    return tok


def load_hf(folder: str, **kwargs):
    """The same folder as a ``transformers`` fast tokenizer (imported lazily: it is heavy)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(folder, **kwargs)


def encode_text(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Ids of ordinary texts: no BOS, no EOS (the tokenizer's own thread pool runs the batch)."""
    return [e.ids for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)]


def encode_document(tok: Tokenizer, text: str) -> list[int]:
    """A pre-training document as the tokenize stage writes it: its ids, then EOS."""
    return tok.encode(text, add_special_tokens=False).ids + [special_id(tok, EOS)]
