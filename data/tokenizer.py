"""Tokenizers for generated tasks: a fixed-alphabet character tokenizer and SentencePiece.

Both share one interface (`encode`, `decode`, `pad_id`/`bos_id`/`eos_id`/`mask_id`, `vocab_size`,
`save`) and the special ids pad=0, bos=1, eos=2, mask=3 (`mask` is the masked-diffusion token of
SPG arXiv:2510.09541; AR models never emit it). `decode` stops at the first eos and skips pad,
bos and mask. `load_tokenizer(path)` reads either kind back.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from collections.abc import Iterable

PAD, BOS, EOS, MASK, UNK = 0, 1, 2, 3, 4
_CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>", "<mask>", "<unk>")


class CharTokenizer:
    """One id per character of a fixed alphabet (printable ASCII by default); others map to unk."""

    pad_id, bos_id, eos_id, mask_id, unk_id = PAD, BOS, EOS, MASK, UNK

    def __init__(self, alphabet: str | None = None):
        alphabet = alphabet if alphabet is not None else string.printable
        self.alphabet = "".join(dict.fromkeys(alphabet))  # dedupe, keep order
        self._ids = {c: i + len(_CHAR_SPECIALS) for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(_CHAR_SPECIALS) + len(self.alphabet)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self._ids.get(c, UNK) for c in text]
        return ([BOS] if add_bos else []) + ids + ([EOS] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i in (PAD, BOS, MASK):
                continue
            out.append("\ufffd" if i == UNK or i >= self.vocab_size else self.alphabet[i - 5])
        return "".join(out)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"type": "char", "alphabet": self.alphabet}, f)


class SentencePieceTokenizer:
    """A SentencePiece model with pad=0, bos=1, eos=2, mask=3 (`<mask>` control symbol), unk=4."""

    pad_id, bos_id, eos_id, mask_id, unk_id = PAD, BOS, EOS, MASK, UNK

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size()
        if self._sp.piece_to_id("<mask>") != MASK or self._sp.pad_id() != PAD:
            raise ValueError("SentencePiece model lacks the pad=0/mask=3 layout; use train()")

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int = 512, model_type: str = "bpe"
    ) -> SentencePieceTokenizer:
        """Trains on `texts` (one thread, so deterministic); newlines kept, byte fallback for the
        rest, so `vocab_size` must exceed 256 byte pieces plus the alphabet."""
        import sentencepiece as spm

        lines = [t.replace("\n", "\ue000") for t in texts]  # the trainer reads one line per text
        with tempfile.TemporaryDirectory() as tmp:
            prefix = os.path.join(tmp, "sp")
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_prefix=prefix,
                vocab_size=vocab_size,
                model_type=model_type,
                pad_id=PAD,
                bos_id=BOS,
                eos_id=EOS,
                unk_id=UNK,
                control_symbols=["<mask>"],
                user_defined_symbols=["\ue000"],
                byte_fallback=True,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                split_digits=True,
                num_threads=1,
                minloglevel=2,
                hard_vocab_limit=False,
            )
            with open(prefix + ".model", "rb") as f:
                return cls(f.read())

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._sp.encode(text.replace("\n", "\ue000"))
        return ([BOS] if add_bos else []) + list(ids) + ([EOS] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        kept = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i not in (PAD, BOS, MASK) and 0 <= i < self.vocab_size:
                kept.append(i)
        return self._sp.decode(kept).replace("\ue000", "\n")

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.model_proto)


def load_tokenizer(path: str) -> CharTokenizer | SentencePieceTokenizer:
    """Loads a tokenizer written by `save` (JSON for char, a model proto for SentencePiece)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:1] == b"{":
        spec = json.loads(data)
        if spec.get("type") != "char":
            raise ValueError(f"{path}: unknown tokenizer type {spec.get('type')!r}")
        return CharTokenizer(spec["alphabet"])
    return SentencePieceTokenizer(data)
