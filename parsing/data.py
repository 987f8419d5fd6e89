"""Semantic-parsing data: a generated TOP-style dataset and a loader for local TOPv2 TSV files.

TreePiece (arXiv:2303.17161) is evaluated on TOPv2 (rows ``domain \\t utterance \\t parse``).
Nothing is downloaded here: ``load_topv2`` reads the public TSV layout from a local directory, and
``generate`` builds a TOP-like corpus from a small grammar of intents, slot templates, lexicons and
nested sub-intents (depth <= 3), including a compositional split whose trees contain
(slot, sub-intent) nestings never seen in training.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import re

from parsing.tree import Node, TopParseError, parse_top, to_top, words


@dataclasses.dataclass(frozen=True)
class Example:
    """One utterance with its full TOP tree; ``tokens`` are the tree's words in order."""

    domain: str
    tokens: tuple[str, ...]
    tree: Node


# ---------------------------------------------------------------------------------------------
# Generated grammar. Templates: words, {SLOT} placeholders, (optional groups) kept with p=0.6.
INTENTS = {
    "GET_WEATHER": [
        "what is the weather (in {LOCATION}) ({DATE_TIME})",
        "will it {WEATHER_ATTRIBUTE} (in {LOCATION}) {DATE_TIME}",
        "how hot is it in {LOCATION}",
        "weather forecast for {LOCATION} ({DATE_TIME})",
    ],
    "CREATE_ALARM": [
        "set an alarm for {DATE_TIME}",
        "wake me up {DATE_TIME} (called {ALARM_NAME})",
        "create a {ALARM_NAME} alarm {DATE_TIME}",
    ],
    "GET_DIRECTIONS": [
        "directions to {DESTINATION} (from {SOURCE})",
        "how do i get to {DESTINATION} (by {METHOD_TRAVEL})",
        "navigate (from {SOURCE}) to {DESTINATION} (avoiding {ROAD_CONDITION})",
        "show me the way to {DESTINATION} ({DATE_TIME})",
    ],
    "GET_ESTIMATED_DURATION": [
        "how long to drive to {DESTINATION} (from {SOURCE})",
        "how long will it take to get to {DESTINATION} ({DATE_TIME})",
    ],
    "SEND_MESSAGE": [
        "send a message to {RECIPIENT} saying {CONTENT_EXACT}",
        "text {RECIPIENT} that {CONTENT_EXACT}",
        "tell {RECIPIENT} {CONTENT_EXACT}",
    ],
    "CREATE_REMINDER": [
        "remind {PERSON_REMINDED} to {TODO} ({DATE_TIME})",
        "set a reminder (for {PERSON_REMINDED}) to {TODO} {DATE_TIME}",
    ],
    "PLAY_MUSIC": [
        "play {MUSIC_ARTIST_NAME} (on {MUSIC_PROVIDER_NAME})",
        "play some {MUSIC_GENRE} (by {MUSIC_ARTIST_NAME})",
        "put on {MUSIC_PLAYLIST_TITLE} playlist",
    ],
    "GET_EVENT": [
        "find {CATEGORY_EVENT} (in {LOCATION}) ({DATE_TIME})",
        "any {CATEGORY_EVENT} happening {DATE_TIME}",
        "what {CATEGORY_EVENT} are there (near {LOCATION})",
    ],
    "CREATE_TIMER": ["start a timer for {DURATION}", "set a {DURATION} timer (named {TIMER_NAME})"],
}
# Sub-intents reachable only through nesting (templates inside a slot).
SUB_INTENTS = {
    "GET_LOCATION_HOME": ["home", "{CONTACT} house", "{CONTACT} place"],
    "GET_LOCATION": ["the nearest {CATEGORY_LOCATION}", "a {CATEGORY_LOCATION} (in {LOCATION})"],
    "GET_EVENT": ["the {CATEGORY_EVENT} (in {LOCATION})", "the {CATEGORY_EVENT} {DATE_TIME}"],
    "GET_CONTACT": ["my {TYPE_RELATION}", "{CONTACT_RELATED} {TYPE_RELATION}"],
}
NESTINGS = {
    "LOCATION": ["GET_LOCATION_HOME", "GET_LOCATION"],
    "DESTINATION": ["GET_LOCATION_HOME", "GET_LOCATION", "GET_EVENT"],
    "SOURCE": ["GET_LOCATION_HOME", "GET_LOCATION"],
    "RECIPIENT": ["GET_CONTACT"],
    "PERSON_REMINDED": ["GET_CONTACT"],
    "CONTACT": ["GET_CONTACT"],
}
# Held out of train/valid/test; the compositional split consists of trees containing them. Each
# part of a pair is seen in training in other nestings (SOURCE holds GET_LOCATION_HOME, GET_LOCATION
# sits under LOCATION and DESTINATION, ...), so only the combination is new. Holding out a slot's
# only nesting (e.g. PERSON_REMINDED -> GET_CONTACT) would make the split unlearnable: training
# would never show that slot holding an intent at all.
HELD_OUT = {("SOURCE", "GET_LOCATION"), ("DESTINATION", "GET_LOCATION_HOME")}
LEXICON = {
    "LOCATION": ["detroit", "paris", "new york", "san francisco", "tokyo", "the city", "boston"],
    "DATE_TIME": [
        "tomorrow",
        "tonight",
        "this weekend",
        "at 7 am",
        "on friday",
        "next week",
        "in the morning",
        "at noon",
    ],
    "WEATHER_ATTRIBUTE": ["rain", "snow", "be sunny", "be windy"],
    "ALARM_NAME": ["work", "gym", "school", "medicine"],
    "DESTINATION": ["the airport", "main street", "the mall", "downtown", "the office"],
    "SOURCE": ["work", "the station", "downtown", "the hotel"],
    "METHOD_TRAVEL": ["car", "bus", "bike", "train"],
    "ROAD_CONDITION": ["traffic", "tolls", "highways"],
    "RECIPIENT": ["alice", "bob", "john smith", "the team", "carol"],
    "CONTENT_EXACT": [
        "i am running late",
        "see you soon",
        "call me back",
        "dinner is ready",
        "happy birthday",
    ],
    "PERSON_REMINDED": ["me", "alice", "bob", "the kids"],
    "TODO": ["buy milk", "call the doctor", "pay rent", "water the plants", "pick up laundry"],
    "MUSIC_ARTIST_NAME": ["adele", "the beatles", "taylor swift", "miles davis"],
    "MUSIC_PROVIDER_NAME": ["spotify", "pandora", "youtube"],
    "MUSIC_GENRE": ["jazz", "rock", "classical music", "hip hop"],
    "MUSIC_PLAYLIST_TITLE": ["workout", "chill vibes", "road trip"],
    "CATEGORY_EVENT": ["concerts", "art fairs", "farmers markets", "comedy shows", "game"],
    "DURATION": ["ten minutes", "an hour", "5 minutes", "half an hour"],
    "TIMER_NAME": ["pasta", "laundry", "nap"],
    "CONTACT": ["my", "mom 's", "alice 's", "my brother 's"],
    "CATEGORY_LOCATION": ["gas station", "pharmacy", "coffee shop", "park"],
    "TYPE_RELATION": ["mom", "dad", "sister", "boss", "wife"],
    "CONTACT_RELATED": ["alice 's", "bob 's", "my friend 's"],
}


def _expand(template: str, rng: random.Random) -> list:
    """Template -> list of words and ('SLOT', name) items, with optional groups sampled."""
    text = re.sub(r"\(([^)]*)\)", lambda m: m.group(1) if rng.random() < 0.6 else "", template)
    items = []
    for tok in text.split():
        items.append(("SLOT", tok[1:-1]) if tok.startswith("{") else tok)
    return items


def _gen_intent(name, table, rng, p_nest, depth, max_depth) -> Node:
    kids = []
    for item in _expand(rng.choice(table[name]), rng):
        if isinstance(item, str):
            kids.append(item)
            continue
        slot = item[1]
        subs = NESTINGS.get(slot, [])
        if subs and depth < max_depth and rng.random() < p_nest:
            sub = _gen_intent(rng.choice(subs), SUB_INTENTS, rng, p_nest, depth + 1, max_depth)
            kids.append(Node("SL:" + slot, (sub,)))
        else:
            kids.append(Node("SL:" + slot, tuple(rng.choice(LEXICON[slot]).split())))
    return Node("IN:" + name, tuple(kids))


def nestings(node: Node) -> set:
    """(slot, sub-intent) label pairs (no prefixes) of every slot that holds an intent."""
    out = set()
    for c in node.children:
        if isinstance(c, Node):
            for g in c.children:
                if isinstance(g, Node) and not c.is_intent:
                    out.add((c.label[3:], g.label[3:]))
            out |= nestings(c)
    return out


def generate(sizes: dict[str, int], *, seed: int = 0, p_nest: float = 0.25, max_depth: int = 3):
    """Generates TOP-style splits.

    Args:
      sizes: examples per split, e.g. ``{"train": 20000, "valid": 2000, "test": 2000,
        "compositional": 1000}``; the ``compositional`` split holds trees with a ``HELD_OUT``
        nesting, every other split excludes them.
      seed: RNG seed. p_nest: probability that a nestable slot holds a sub-intent.
      max_depth: maximum number of intents on a root-to-leaf path.

    Returns:
      ``{split: [Example]}``.
    """
    rng = random.Random(seed)
    out = {}
    for split, n in sizes.items():
        comp = split == "compositional"
        exs = []
        while len(exs) < n:
            # The compositional split forces nesting so that held-out pairs show up often.
            tree = _gen_intent(
                rng.choice(sorted(INTENTS)), INTENTS, rng, 0.7 if comp else p_nest, 1, max_depth
            )
            if bool(nestings(tree) & HELD_OUT) != comp:
                continue
            exs.append(Example("generated", tuple(words(tree)), tree))
        out[split] = exs
    return out


# ---------------------------------------------------------------------------------------------
_SPLIT_FILES = {"train": "train", "valid": "eval", "test": "test"}


def read_tsv(path: str, *, strict: bool = True) -> list[Example]:
    """Reads one TOPv2 TSV file (``domain \\t utterance \\t semantic_parse``, optional header).

    Args:
      path: the file. strict: raise on a malformed row (else skip it).

    Raises:
      ValueError: naming the file and line of a malformed row (strict mode).
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or (lineno == 1 and line.lower().startswith("domain\t")):
                continue
            cols = line.split("\t")
            try:
                if len(cols) < 3:
                    raise TopParseError(f"expected 3 tab-separated columns, got {len(cols)}")
                tree = parse_top(cols[2])
            except TopParseError as e:
                if strict:
                    raise ValueError(f"{path}:{lineno}: {e}") from e
                continue
            # TOPv2 parses contain every utterance token, so the tree's words are the tokens.
            out.append(Example(cols[0], tuple(words(tree)), tree))
    return out


def load_topv2(data_dir: str, domains=None, *, strict: bool = True) -> dict[str, list[Example]]:
    """Loads TOPv2 from ``data_dir/<domain>_{train,eval,test}.tsv`` (the public release layout).

    Returns:
      ``{"train", "valid", "test": [Example]}``.

    Raises:
      FileNotFoundError: if no matching files are found, saying where to put them.
    """
    out = {}
    for split, suffix in _SPLIT_FILES.items():
        paths = sorted(glob.glob(os.path.join(data_dir, f"*_{suffix}.tsv")))
        if domains:
            paths = [p for p in paths if os.path.basename(p).rsplit("_", 1)[0] in domains]
        if not paths:
            raise FileNotFoundError(
                f"no TOPv2 files '*_{suffix}.tsv' in {data_dir!r}: put the TOPv2 release files "
                f"(e.g. weather_train.tsv, weather_eval.tsv, weather_test.tsv) there"
            )
        out[split] = [ex for p in paths for ex in read_tsv(p, strict=strict)]
    return out


def write_tsv(path: str, examples: list[Example]) -> None:
    """Writes examples in TOPv2 layout (used to export the generated data and in tests)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("domain\tutterance\tsemantic_parse\n")
        for ex in examples:
            f.write(f"{ex.domain}\t{' '.join(ex.tokens)}\t{to_top(ex.tree)}\n")
