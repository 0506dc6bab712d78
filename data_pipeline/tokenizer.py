"""Each expert's own sentencepiece tokenizer.

Trained on the expert's corpus with byte fallback and identity normalisation, so that every string
(log lines with odd whitespace, binary junk, any script) round-trips losslessly: decode(encode(s)) == s.
The prompt markers and the span-corruption sentinels are user-defined symbols, always one piece.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

from data_pipeline.tokens import DENOISER_MODES, PROMPT_SYMBOLS, SENTINELS, TokenizerConfig
from flipmoe.errors import FlipmoeInputError

TOKENIZER_FILE = "tokenizer.model"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A trained sentencepiece model with the ids flipmoe relies on (pad, bos, eos, prompt symbols, sentinels)."""

    def __init__(self, processor: spm.SentencePieceProcessor, *, model_proto: bytes) -> None:
        self.sp = processor
        self._proto = model_proto
        self.vocab_size: int = processor.get_piece_size()
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID
        self.sentinel_ids: tuple[int, ...] = tuple(self.piece_id(s) for s in SENTINELS)
        self.symbol_ids: dict[str, int] = {s: self.piece_id(s) for s in (*PROMPT_SYMBOLS, *DENOISER_MODES)}

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        try:
            proto = path.read_bytes()
        except FileNotFoundError:
            raise FlipmoeInputError("tokenizer model not found", path=path,
                                    hint="train one with 'flipmoe train tokenizer'") from None
        return cls.from_proto(proto, source=path)

    @classmethod
    def from_proto(cls, proto: bytes, *, source: str | Path = "<bytes>") -> Tokenizer:
        processor = spm.SentencePieceProcessor()
        try:
            processor.load_from_serialized_proto(proto)
        except (RuntimeError, OSError) as err:
            raise FlipmoeInputError(f"not a sentencepiece model: {err}", path=source) from None
        return cls(processor, model_proto=proto)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TOKENIZER_FILE
        path.write_bytes(self._proto)
        return path

    def piece_id(self, piece: str) -> int:
        token_id = self.sp.piece_to_id(piece)
        if token_id == self.unk_id and piece != self.sp.id_to_piece(self.unk_id):
            raise FlipmoeInputError(f"tokenizer has no piece {piece!r}")
        return int(token_id)

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids: list[int] = self.sp.encode(text, out_type=int)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; pad, bos and eos are dropped."""
        specials = (self.pad_id, self.bos_id, self.eos_id)
        return self.sp.decode([int(i) for i in ids if int(i) not in specials])

    def id_to_piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(int(token_id))

    def pieces(self) -> list[str]:
        """Every piece of the vocabulary, indexed by id (constrained decoding needs the surface forms)."""
        return [self.sp.id_to_piece(i) for i in range(self.vocab_size)]


def train_tokenizer(texts: Iterable[str], config: TokenizerConfig, *, seed: int = 0) -> Tokenizer:
    """Train a sentencepiece model on `texts` (one sentence per item; newlines inside an item are kept).

    The vocabulary shrinks to what the corpus supports (`hard_vocab_limit=False`), so a tiny corpus
    still trains; the resulting size is `Tokenizer.vocab_size`, which the decoder config must use.
    """
    sentences = [t for t in texts if t]
    if not sentences:
        raise FlipmoeInputError("cannot train a tokenizer on an empty corpus")
    model = io.BytesIO()
    spm.set_random_generator_seed(seed)  # sentence sampling and shuffling: same corpus, same tokenizer
    symbols = list(dict.fromkeys((*PROMPT_SYMBOLS, *DENOISER_MODES, *SENTINELS, *config.user_defined_symbols)))
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=config.vocab_size,
        model_type=config.model_type,
        byte_fallback=config.byte_fallback,
        split_digits=config.split_digits,
        user_defined_symbols=symbols,
        character_coverage=config.character_coverage,
        max_sentence_length=config.max_sentence_length,
        input_sentence_size=config.input_sentence_size,
        shuffle_input_sentence=True,
        seed_sentencepiece_size=200_000,
        # Lossless: no NFKC, no dummy "▁" prefix, whitespace kept as written (log lines align with it).
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    return Tokenizer.from_proto(model.getvalue())
