"""Tokenizers for generated tasks: a fixed-alphabet character tokenizer and SentencePiece.

Both share one interface (`encode`, `decode`, `chat_prompt`, `pad_id`/`bos_id`/`eos_id`/`mask_id`,
`vocab_size`, `save`) and the special ids pad=0, bos=1, eos=2, mask=3 (`mask` is the
masked-diffusion token of SPG arXiv:2510.09541; AR models never emit it). `decode` stops at the
first eos and skips pad, bos and mask. `load_tokenizer(path)` reads either kind back.

`HFTokenizer` wraps a local HF `tokenizer.json` (LLaDA-8B-Instruct's for `configs/spg.py:llada8b`)
behind the same interface, with that checkpoint's own special ids and chat template.
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

    def chat_prompt(self, text: str) -> str:
        """Generated-task models are trained on bare prompts: no chat template."""
        return text

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

    def chat_prompt(self, text: str) -> str:
        return text

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self.model_proto)


# LLaDA-8B-Instruct's special tokens (arXiv:2502.09992; ids 126080 / 126081 / 126348 / 126336) and
# its one-user-turn chat template (Llama-3 style), as the SPG reference code builds prompts.
LLADA_SPECIALS = dict(
    bos="<|startoftext|>",
    eos="<|endoftext|>",
    eot="<|eot_id|>",
    mask="<|mdm_mask|>",
)
LLAMA3_CHAT = (
    "<|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


class HFTokenizer:
    """A local HF `tokenizer.json` (never downloaded) with the shared tokenizer interface.

    `eos_id` is `specials["eos"]` (LLaDA pads and ends completions with `<|endoftext|>`); `decode`
    stops at the first eos OR eot and drops every special token, like the reference code's
    `batch_decode(..., skip_special_tokens=True)` after the first EOS. `pad_id` is the eos id (LLaDA
    has no pad token). `chat_prompt` wraps a task prompt in `chat_template` (`{prompt}` slot);
    `encode(add_bos=True)` prepends the checkpoint's bos.
    """

    def __init__(
        self, path: str, *, specials: dict | None = None, chat_template: str = LLAMA3_CHAT
    ):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - tokenizers is a dependency
            raise ImportError("HFTokenizer needs the `tokenizers` package") from e

        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            from models.errors import MissingFileError

            raise MissingFileError(
                f"no tokenizer.json at {path!r}: put the checkpoint's HF tokenizer file there "
                "(nothing is downloaded at run time)"
            )
        try:
            self._tok = Tokenizer.from_file(file)
        except Exception as e:
            raise ValueError(f"{file}: not a valid HF tokenizer.json ({e})") from e
        self.path = file
        self.specials = dict(specials or LLADA_SPECIALS)
        ids = {}
        for role, token in self.specials.items():
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise ValueError(
                    f"{file}: special token {token!r} ({role}) is not in the vocabulary; pass "
                    "`specials=` naming this checkpoint's tokens"
                )
            ids[role] = tid
        if "{prompt}" not in chat_template:
            raise ValueError("chat_template needs a '{prompt}' slot")
        self.chat_template = chat_template
        self.bos_id, self.eos_id, self.mask_id = ids["bos"], ids["eos"], ids["mask"]
        self.pad_id = self.eos_id
        unk = self._tok.token_to_id(self.specials["unk"]) if "unk" in self.specials else None
        self.unk_id = self.eos_id if unk is None else unk
        self._stop = {ids["eos"], ids.get("eot", ids["eos"])}
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i in self._stop:
                break
            out.append(i)
        return self._tok.decode(out, skip_special_tokens=True)

    def chat_prompt(self, text: str) -> str:
        return self.chat_template.replace("{prompt}", text)

    def save(self, path: str) -> None:
        spec = {
            "type": "hf",
            "tokenizer": self._tok.to_str(),
            "specials": self.specials,
            "chat_template": self.chat_template,
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f)


def load_tokenizer(path: str) -> CharTokenizer | SentencePieceTokenizer | HFTokenizer:
    """Loads a tokenizer written by `save` (JSON for char and HF, a proto for SentencePiece)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:1] == b"{":
        spec = json.loads(data)
        if spec.get("type") == "hf":
            with tempfile.TemporaryDirectory() as d:
                file = os.path.join(d, "tokenizer.json")
                with open(file, "w", encoding="utf-8") as f:
                    f.write(spec["tokenizer"])
                return HFTokenizer(
                    file, specials=spec["specials"], chat_template=spec["chat_template"]
                )
        if spec.get("type") != "char":
            raise ValueError(f"{path}: unknown tokenizer type {spec.get('type')!r}")
        return CharTokenizer(spec["alphabet"])
    return SentencePieceTokenizer(data)
