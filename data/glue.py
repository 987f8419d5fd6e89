"""GLUE-like tasks generated from a small probabilistic grammar, and a loader for GLUE TSV files.

For READ (arXiv:2305.15348, spec §7.1/§7.3): the frozen backbone is pretrained (masked LM) on a
corpus from this grammar, then adapted to downstream tasks drawn from the same grammar:

- `topic`   single-sentence classification (SST-2 analogue): the topic most content words come from.
- `agree`   single-sentence acceptability (CoLA analogue): is subject-verb agreement kept?
- `pair`    sentence-pair classification (MRPC analogue): does B have the same subject noun as A?
- `overlap` sentence-pair regression (STS-B analogue): 0-5 score, how many of A's five attributes
  (subject, adjective, verb, adverb, object) B repeats.

The grammar has topics (content words mostly from one topic) and number agreement (determiner,
noun and verb forms). The pretraining corpus holds sentence pairs whose second sentence repeats
attributes of the first, so a masked-LM backbone learns to attend across the pair.

`load_glue_tsv` reads the public GLUE layout (`<dir>/<TASK>/<split>.tsv`); nothing is downloaded.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re

import numpy as np

SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")
PAD, CLS, SEP, MASK, UNK = range(5)

_TOPICS = {
    "animals": (
        ("dog", "cat", "horse", "bird", "fox", "wolf"),
        ("run", "sleep", "hunt", "eat", "jump", "hide"),
        ("wild", "small", "hungry", "furry", "fast", "lazy"),
    ),
    "kitchen": (
        ("cook", "baker", "chef", "waiter", "guest", "farmer"),
        ("bake", "stir", "taste", "serve", "chop", "boil"),
        ("warm", "sweet", "salty", "fresh", "busy", "tired"),
    ),
    "city": (
        ("driver", "bus", "train", "tower", "bridge", "market"),
        ("move", "stop", "shine", "open", "close", "wait"),
        ("tall", "old", "crowded", "quiet", "bright", "noisy"),
    ),
    "sea": (
        ("ship", "sailor", "wave", "whale", "island", "storm"),
        ("sail", "drift", "swim", "crash", "sink", "rise"),
        ("blue", "deep", "calm", "rough", "salty", "distant"),
    ),
}
_DET_SG, _DET_PL, _DET_ANY = ("a", "one", "this"), ("some", "many", "these"), ("the",)
_ADVERBS = ("quickly", "slowly", "often", "rarely", "loudly", "softly")
_PREPS = ("near", "under", "with", "behind")
TOPICS = tuple(_TOPICS)
TASKS = ("topic", "agree", "pair", "overlap")


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "sh", "ch", "x")) else "s")


def _third(verb: str) -> str:
    return verb + ("es" if verb.endswith(("s", "sh", "ch", "x", "o")) else "s")


def grammar_words() -> list[str]:
    """Every word the grammar can emit, in a fixed order."""
    words: list[str] = []
    for nouns, verbs, adjs in _TOPICS.values():
        words += [w for n in nouns for w in (n, _plural(n))]
        words += [w for v in verbs for w in (v, _third(v))]
        words += list(adjs)
    words += list(_DET_SG + _DET_PL + _DET_ANY + _ADVERBS + _PREPS)
    return list(dict.fromkeys(words))  # adjectives may repeat across topics


class Vocab:
    """Word-level vocabulary: the special tokens, then `words`; unknown words map to [UNK]."""

    def __init__(self, words: list[str] | None = None):
        self.itos = list(SPECIALS) + list(words if words is not None else grammar_words())
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, UNK) for w in re.findall(r"[a-z0-9']+", text.lower())]

    def decode(self, ids) -> str:
        return " ".join(self.itos[int(i)] for i in ids if int(i) != PAD)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    n_classes: int  # 0 = regression
    metric: str  # "accuracy" | "mcc" | "pearson"
    pair: bool


TASK_SPECS = {
    "topic": TaskSpec("topic", len(_TOPICS), "accuracy", False),
    "agree": TaskSpec("agree", 2, "mcc", False),
    "pair": TaskSpec("pair", 2, "accuracy", True),
    "overlap": TaskSpec("overlap", 0, "pearson", True),
}


def _sample_attrs(rng: np.random.Generator, topic: int, p_topic: float) -> dict:
    """Draws the attributes of one sentence; content words leave the topic with 1 - p_topic."""
    pick = lambda: topic if rng.random() < p_topic else int(rng.integers(len(_TOPICS)))
    return {
        "plural": bool(rng.random() < 0.5),
        "subj": (pick(), int(rng.integers(6))),
        "adj": (pick(), int(rng.integers(6))) if rng.random() < 0.8 else None,
        "verb": (pick(), int(rng.integers(6))),
        "adv": int(rng.integers(len(_ADVERBS))) if rng.random() < 0.7 else None,
        "obj": (pick(), int(rng.integers(6))) if rng.random() < 0.6 else None,
        "obj_plural": bool(rng.random() < 0.5),
    }


def _render(rng: np.random.Generator, a: dict, *, break_agreement: bool = False) -> list[str]:
    """Words of one sentence: det [adj] noun verb [adv] [prep det noun]."""
    topics = list(_TOPICS.values())
    plural = a["plural"]
    verb_plural = plural != break_agreement  # agreement violation flips the verb's number
    det = rng.choice(_DET_ANY + (_DET_PL if plural else _DET_SG))
    noun = topics[a["subj"][0]][0][a["subj"][1]]
    verb = topics[a["verb"][0]][1][a["verb"][1]]
    words = [str(det)]
    if a["adj"] is not None:
        words.append(topics[a["adj"][0]][2][a["adj"][1]])
    words += [_plural(noun) if plural else noun, verb if verb_plural else _third(verb)]
    if a["adv"] is not None:
        words.append(_ADVERBS[a["adv"]])
    if a["obj"] is not None:
        obj = topics[a["obj"][0]][0][a["obj"][1]]
        words += [str(rng.choice(_PREPS)), "the", _plural(obj) if a["obj_plural"] else obj]
    return words


_ATTRS = ("subj", "adj", "verb", "adv", "obj")


def _echo(rng: np.random.Generator, a: dict, p_repeat: float, p_topic: float) -> dict:
    """A second sentence on A's topic that repeats each of A's attributes with prob. p_repeat."""
    b = _sample_attrs(rng, a["subj"][0], p_topic)
    for k in _ATTRS:
        if rng.random() < p_repeat:
            b[k] = a[k]
    return b


def _pack(vocab: Vocab, sents: list[list[str]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    ids = [CLS]
    for s in sents:
        ids += [vocab.stoi[w] for w in s] + [SEP]
    if len(ids) > max_len:
        raise ValueError(f"example of {len(ids)} tokens exceeds max_len={max_len}")
    tokens = np.full((max_len,), PAD, np.int32)
    tokens[: len(ids)] = ids
    return tokens, tokens != PAD


def make_corpus(n: int, *, seed: int, max_len: int = 24, vocab: Vocab | None = None) -> dict:
    """Pretraining corpus: `n` two-sentence documents. Returns tokens [n, T] int32, mask [n, T]."""
    vocab = vocab or Vocab()
    rng = np.random.default_rng([seed, 0])
    toks, masks = [], []
    for _ in range(n):
        a = _sample_attrs(rng, int(rng.integers(len(_TOPICS))), 0.8)
        b = _echo(rng, a, 0.5, 0.8)
        t, m = _pack(vocab, [_render(rng, a), _render(rng, b)], max_len)
        toks.append(t)
        masks.append(m)
    return {"tokens": np.stack(toks), "mask": np.stack(masks)}


def make_task(name: str, n: int, *, seed: int, max_len: int = 24, vocab=None) -> dict:
    """`n` labelled examples of a generated task.

    Args:
      name: one of TASKS.
      n: number of examples.
      seed: RNG seed (use distinct seeds for train / validation / test).
      max_len: padded length T.
      vocab: a `Vocab` (default: the grammar's).

    Returns:
      dict with tokens [n, T] int32, mask [n, T] bool, label [n] (int32, or float32 in [0, 5]).
    """
    if name not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
    vocab = vocab or Vocab()
    rng = np.random.default_rng([seed, 1 + TASKS.index(name)])
    toks, masks, labels = [], [], []
    for _ in range(n):
        topic = int(rng.integers(len(_TOPICS)))
        a = _sample_attrs(rng, topic, 0.6 if name == "topic" else 0.8)
        if name == "topic":
            sents, y = [_render(rng, a)], topic
        elif name == "agree":
            y = int(rng.random() < 0.5)
            sents = [_render(rng, a, break_agreement=not y)]
        elif name == "pair":
            y = int(rng.random() < 0.5)
            b = _echo(rng, a, 0.3, 0.8)
            # Same noun lemma for positives (number may differ); a different noun of the same topic
            # for negatives, so the topic alone does not give the label away.
            other = (a["subj"][1] + 1 + int(rng.integers(5))) % 6
            b["subj"] = a["subj"] if y else (a["subj"][0], other)
            sents = [_render(rng, a), _render(rng, b)]
        else:
            b = _echo(rng, a, float(rng.random()), 0.8)
            y = 5.0 * sum(a[k] == b[k] for k in _ATTRS) / len(_ATTRS)
            sents = [_render(rng, a), _render(rng, b)]
        t, m = _pack(vocab, sents, max_len)
        toks.append(t)
        masks.append(m)
        labels.append(y)
    dtype = np.float32 if TASK_SPECS[name].n_classes == 0 else np.int32
    return {"tokens": np.stack(toks), "mask": np.stack(masks), "label": np.asarray(labels, dtype)}


def score(metric: str, pred: np.ndarray, label: np.ndarray) -> float:
    """Task score in points (x100): accuracy, Matthews correlation or Pearson correlation."""
    pred, label = np.asarray(pred), np.asarray(label)
    if metric == "accuracy":
        return float(100.0 * np.mean(pred == label))
    if metric == "mcc":
        tp = np.sum((pred == 1) & (label == 1))
        tn = np.sum((pred == 0) & (label == 0))
        fp = np.sum((pred == 1) & (label == 0))
        fn = np.sum((pred == 0) & (label == 1))
        den = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
        return float(100.0 * (tp * tn - fp * fn) / den) if den > 0 else 0.0
    if metric == "pearson":
        if np.std(pred) == 0 or np.std(label) == 0:
            return 0.0
        return float(100.0 * np.corrcoef(pred, label)[0, 1])
    raise ValueError(f"unknown metric {metric!r}")


# Public GLUE layout: (header?, text_a column, text_b column or None, label column, label map).
# Columns are header names, or indices for header-less files (CoLA train/dev).
_GLUE = {
    "CoLA": (False, 3, None, 1, None),
    "SST-2": (True, "sentence", None, "label", None),
    "MRPC": (True, "#1 String", "#2 String", "Quality", None),
    "STS-B": (True, "sentence1", "sentence2", "score", float),
    "QQP": (True, "question1", "question2", "is_duplicate", None),
    "MNLI": (
        True,
        "sentence1",
        "sentence2",
        "gold_label",
        {"entailment": 0, "neutral": 1, "contradiction": 2},
    ),
    "QNLI": (True, "question", "sentence", "label", {"entailment": 0, "not_entailment": 1}),
    "RTE": (True, "sentence1", "sentence2", "label", {"entailment": 0, "not_entailment": 1}),
    "WNLI": (True, "sentence1", "sentence2", "label", None),
}


def load_glue_tsv(data_dir: str, task: str, split: str = "dev") -> dict:
    """Reads `<data_dir>/<task>/<split>.tsv` in the public GLUE layout.

    Args:
      data_dir: folder holding the GLUE task folders (CoLA, SST-2, MRPC, STS-B, ...).
      task: GLUE task folder name.
      split: file stem (train, dev, dev_matched, ...); unlabelled files give label None.

    Returns:
      dict with text_a (list[str]), text_b (list[str] or None) and label (np.ndarray or None).
    """
    if task not in _GLUE:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(_GLUE)}")
    path = os.path.join(data_dir, task, f"{split}.tsv")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: place the GLUE data (the public glue_data layout, e.g. "
            f"glue_data/{task}/{split}.tsv) under {data_dir}; nothing is downloaded at run time"
        )
    header, col_a, col_b, col_y, label_map = _GLUE[task]
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if header:
        names, rows = rows[0], rows[1:]
        idx = {n: i for i, n in enumerate(names)}
        col = lambda c: idx.get(c)
    else:
        col = lambda c: c
    ia, ib, iy = col(col_a), col(col_b) if col_b else None, col(col_y)
    rows = [r for r in rows if r]
    text_a = [r[ia] for r in rows]
    text_b = [r[ib] for r in rows] if ib is not None else None
    label = None
    if iy is not None and all(len(r) > iy for r in rows):
        raw = [r[iy] for r in rows]
        if label_map is float:
            label = np.asarray([float(v) for v in raw], np.float32)
        elif label_map:
            label = np.asarray([label_map[v] for v in raw], np.int32)
        else:
            label = np.asarray([int(v) for v in raw], np.int32)
    return {"text_a": text_a, "text_b": text_b, "label": label}


def encode_glue(vocab: Vocab, examples: dict, max_len: int) -> dict:
    """Tokenises `load_glue_tsv` output as [CLS] a [SEP] (b [SEP]), truncating each side."""
    n = len(examples["text_a"])
    tokens = np.full((n, max_len), PAD, np.int32)
    for i in range(n):
        parts = [vocab.encode(examples["text_a"][i])]
        if examples["text_b"] is not None:
            parts.append(vocab.encode(examples["text_b"][i]))
        room = (max_len - 1) // len(parts) - 1  # each part keeps its [SEP]
        ids = [CLS] + [t for p in parts for t in p[:room] + [SEP]]
        tokens[i, : len(ids)] = ids
    out = {"tokens": tokens, "mask": tokens != PAD}
    if examples["label"] is not None:
        out["label"] = examples["label"]
    return out
