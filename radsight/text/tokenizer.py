"""A byte-level BPE tokenizer of report text, trained with ``tokenizers`` on a run's training reports only
(the validation and test reports never shape the vocabulary), kept as its JSON (never a pickle).

Ids 0-4 are the special tokens: padding, begin, end, unknown, and ``XXXX``, the IU collection's
de-identification mask, which stays one token instead of being learnt as a word. Byte-level pieces
decode back to exactly the text encoded (lower-cased when ``lowercase``; ``XXXX`` is never lowered).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from radsight.atomic import write_text
from radsight.errors import ConfigError, DataError

PAD, BOS, EOS, UNK, DEIDENTIFIED = "[PAD]", "[BOS]", "[EOS]", "[UNK]", "XXXX"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, DEIDENTIFIED)
TOKENIZER_FILE = "tokenizer.json"
MIN_VOCABULARY = 256 + len(SPECIAL_TOKENS)
"""The byte alphabet and the special tokens: the smallest vocabulary a byte-level BPE can have."""


class ReportTokenizer:
    """Report text to ids and back; ``pad_id``, ``bos_id``, ``eos_id``, ``unk_id`` are 0, 1, 2, 3."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokenizer: Tokenizer) -> None:
        missing = [t for i, t in enumerate(SPECIAL_TOKENS) if tokenizer.token_to_id(t) != i]
        if missing:
            raise ConfigError(
                f"tokenizer: special token(s) {missing} are not at ids 0-4 (not a radsight one)"
            )
        self.tokenizer = tokenizer

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, *, lowercase: bool = True, min_frequency: int = 2
    ) -> ReportTokenizer:
        """Learn BPE merges from ``texts`` up to ``vocab_size`` tokens (fewer when the texts run out)."""
        if vocab_size < MIN_VOCABULARY:
            raise ConfigError(
                f"tokenizer: vocab_size {vocab_size} is below the byte alphabet's {MIN_VOCABULARY}"
            )
        texts = [text for text in texts if text]
        if not texts:
            raise DataError(None, "no training image carries a report to learn a vocabulary from")
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> ReportTokenizer:
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as error:  # tokenizers raises its own exception type for malformed JSON
            raise ConfigError(f"tokenizer: not a tokenizer's JSON ({str(error)[:200]})") from None

    @classmethod
    def load(cls, path: str | Path) -> ReportTokenizer:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: tokenizer file not found")
        return cls.from_json(path.read_text())

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        write_text(Path(path), self.to_json())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[BOS] ids [EOS]``, the ids cut so that the whole is at most ``max_tokens`` long."""
        ids = self.tokenizer.encode(text).ids
        if max_tokens is not None:
            ids = ids[: max_tokens - 2]
        return [self.bos_id, *ids, self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` up to the first end token; begin and padding tokens are dropped."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        kept = [i for i in ids if i not in (self.pad_id, self.bos_id)]
        return self.tokenizer.decode(kept, skip_special_tokens=False)
