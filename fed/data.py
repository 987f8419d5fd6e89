"""Federated text: a generated corpus with private per-client words, and a JSONL-per-client loader.

The generated corpus follows the acceptance setting of ../shared/papers/oov.md (arXiv:2305.03584):
a shared vocabulary of topic words with Zipf frequencies, clients with Dirichlet topic mixtures,
and per-client private words (names and product codes) that appear in client-specific slots
("call {name} about the {noun}", "send {code} to {name}"). Common shared names are in the central
vocabulary, so a model can learn what a name looks like and where it goes; the private ones are
out of vocabulary by construction (each is used by one client only). Sentences are ordered in time
and split per client: the first `train_frac` for training, the rest for testing.

Real corpora: `load_jsonl_clients(directory)` reads one `<client_id>.jsonl` per client, each line
`{"text": "...", "time": <optional sortable>}`; text is lower-cased and split on whitespace.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections import Counter

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789<>/-'"

_WORD_SYL = ["ba", "de", "fi", "go", "lu", "ma", "ne", "po", "ri", "su", "ta", "vo", "ke", "mi"]
_NAME_START = ["al", "be", "cla", "da", "el", "fre", "ja", "li", "mo", "ni", "ro", "sa", "ther"]
_NAME_END = ["ra", "na", "lia", "son", "ton", "ette", "ika", "ric", "ine"]
_FUNCTION = "i you we the a to and is with at about for my".split()
_TEMPLATES_SHARED = [
    "the {adj} {noun} is {adj}",
    "i {verb} the {noun} with my {noun}",
    "we {verb} {noun} and {noun}",
    "you {verb} a {adj} {noun} for the {noun}",
    "my {noun} is {adj} and {adj}",
]
_TEMPLATES_PRIVATE = [
    "call {name} about the {noun}",
    "meet {name} at the {noun}",
    "send {code} to {name}",
    "{name} is {adj}",
    "i {verb} {code} with {name}",
]


@dataclasses.dataclass
class FederatedCorpus:
    """Per-client sentences in time order (lists of words), plus generator metadata."""

    clients: list[list[list[str]]]
    topic_mix: np.ndarray | None = None  # [num_clients, num_topics]
    private_words: list[list[str]] | None = None


def _words(rng: np.random.Generator, n: int, syl: list[str], lo: int, hi: int, taken: set):
    out = []
    while len(out) < n:
        w = "".join(rng.choice(syl, size=rng.integers(lo, hi + 1)))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _zipf(n: int, s: float = 1.1) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def generate_corpus(
    *,
    num_clients: int = 200,
    num_topics: int = 8,
    words_per_topic: int = 90,
    num_shared_names: int = 30,
    private_per_client: tuple[int, int] = (5, 20),
    sentences_per_client: tuple[int, int] = (40, 120),
    private_frac: float = 0.3,
    topic_alpha: float = 0.3,
    topic_mix: np.ndarray | None = None,
    seed: int = 0,
    sample_seed: int | None = None,
) -> FederatedCorpus:
    """Generates a federated corpus (deterministic in `seed`).

    Each topic owns nouns, verbs and adjectives with Zipf frequencies. A client draws a topic
    mixture from Dir(topic_alpha) (or takes row u of `topic_mix`), owns a few private names and
    codes, and writes sentences from shared templates or, with prob. `private_frac`, from personal
    templates whose name slot takes a private name (70%) or a shared common name (30%).
    The words (topics, shared names) depend on `seed` only; with `sample_seed` set, the clients
    are drawn from a separate stream, so corpora with one `seed` share a vocabulary.
    """
    rng = np.random.default_rng(seed)
    taken = set(_FUNCTION)
    per_kind = words_per_topic // 3
    topics = [
        {k: _words(rng, per_kind, _WORD_SYL, 2, 3, taken) for k in ("noun", "verb", "adj")}
        for _ in range(num_topics)
    ]
    shared_names = [
        a + b
        for a, b in zip(rng.choice(_NAME_START, 10**4), rng.choice(_NAME_END, 10**4), strict=True)
    ]
    shared_names = list(dict.fromkeys(n for n in shared_names if n not in taken))[:num_shared_names]
    taken.update(shared_names)
    if sample_seed is not None:
        rng = np.random.default_rng([seed, sample_seed])
    zipf = _zipf(per_kind)
    mix = (
        topic_mix
        if topic_mix is not None
        else rng.dirichlet([topic_alpha] * num_topics, num_clients)
    )
    clients, privates = [], []
    for u in range(num_clients):
        k = int(rng.integers(private_per_client[0], private_per_client[1] + 1))
        names = []
        while len(names) < k:
            mid = "".join(rng.choice(_WORD_SYL, size=rng.integers(1, 3)))
            n = rng.choice(_NAME_START) + mid + rng.choice(_NAME_END)
            if n not in taken:
                taken.add(n)
                names.append(n)
        codes = []
        while len(codes) < 3:
            c = "".join(rng.choice(list("kxzqj"), 3)) + str(int(rng.integers(10, 100)))
            if c not in taken:
                taken.add(c)
                codes.append(c)
        privates.append(names + codes)
        name_p, code_p = _zipf(len(names), 1.3), _zipf(len(codes), 1.3)
        sentences = []
        for _ in range(int(rng.integers(sentences_per_client[0], sentences_per_client[1] + 1))):
            topic = topics[rng.choice(num_topics, p=mix[u])]
            private = rng.random() < private_frac
            template = rng.choice(_TEMPLATES_PRIVATE if private else _TEMPLATES_SHARED)
            words = []
            for tok in template.split():
                if tok in ("{noun}", "{verb}", "{adj}"):
                    words.append(topic[tok[1:-1]][rng.choice(per_kind, p=zipf)])
                elif tok == "{name}":
                    pool = names if rng.random() < 0.7 else None
                    words.append(
                        pool[rng.choice(len(pool), p=name_p)]
                        if pool
                        else shared_names[rng.integers(len(shared_names))]
                    )
                elif tok == "{code}":
                    words.append(codes[rng.choice(len(codes), p=code_p)])
                else:
                    words.append(tok)
            sentences.append(words)
        clients.append(sentences)
    return FederatedCorpus(clients, np.asarray(mix), privates)


def split_by_time(sentences: list, train_frac: float = 0.8) -> tuple[list, list]:
    """First `train_frac` of a client's (time-ordered) sentences for training, the rest for test."""
    cut = max(1, int(round(len(sentences) * train_frac)))
    return sentences[:cut], sentences[cut:]


def build_vocab(clients: list[list[list[str]]], size: int, min_clients: int = 3) -> list[str]:
    """Central vocabulary: specials + the `size` most frequent words used by >= `min_clients`.

    Requiring several clients per word keeps any one user's private words out of the model.
    """
    counts, users = Counter(), Counter()
    for sentences in clients:
        words = [w for s in sentences for w in s]
        counts.update(words)
        users.update(set(words))
    eligible = [w for w, _ in counts.most_common() if users[w] >= min_clients]
    return list(SPECIALS) + sorted(eligible[:size], key=lambda w: (-counts[w], w))


def encode(sentences: list, word_to_id: dict[str, int], max_len: int) -> np.ndarray:
    """Sentences -> int32 `[n, max_len + 1]`: <s> w_1 .. w_n </s> padded/truncated; OOV -> <unk>."""
    unk, out = word_to_id[UNK], np.zeros((len(sentences), max_len + 1), np.int32)
    for i, s in enumerate(sentences):
        ids = [word_to_id[BOS]] + [word_to_id.get(w, unk) for w in s] + [word_to_id[EOS]]
        ids = ids[: max_len + 1]
        out[i, : len(ids)] = ids
    return out


def chars_of(words: list[str], max_chars: int) -> np.ndarray:
    """Character ids `[len(words), max_chars]` (0 = pad; unknown characters map to '-')."""
    table = {c: i + 1 for i, c in enumerate(CHARS)}
    out = np.zeros((len(words), max_chars), np.int32)
    for i, w in enumerate(words):
        for j, ch in enumerate(w[:max_chars]):
            out[i, j] = table.get(ch, table["-"])
    return out


def load_jsonl_clients(directory: str | pathlib.Path) -> FederatedCorpus:
    """Reads `<client_id>.jsonl` files (lines with "text" and optional "time") as a corpus."""
    path = pathlib.Path(directory)
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no *.jsonl client files in {path}: put one file per client there, each line "
            '{"text": "...", "time": <optional>}'
        )
    clients = []
    for f in files:
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        rows.sort(key=lambda r: r.get("time", 0))
        clients.append([str(r["text"]).lower().split() for r in rows])
    return FederatedCorpus(clients)
