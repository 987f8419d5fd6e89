"""TOP / TOPv2 parse trees: parse, print, validate, decouple, and split into skeleton + spans.

TreePiece (arXiv:2303.17161, Sec. 2) decodes a *skeleton* (the ontology nodes of the decoupled
tree, with every slot's text replaced by a leaf placeholder) and fills the leaves with utterance
spans. This module holds the host-side tree plumbing shared by the tokeniser, the data pipeline
and the three parsers.

Representations:
  * ``Node(label, children)``: a full or decoupled TOP tree; children are ``Node`` or word ``str``.
  * skeleton / unit: nested tuples ``(label, children)`` whose children are nested tuples, ``LEAF``
    (a slot's text placeholder, printed ``◦``) or, for tokeniser units only, ``OPEN`` (a
    substitution site, printed ``□``). Tuples are hashable, so units key dictionaries directly.
"""

from __future__ import annotations

import dataclasses
import re

LEAF = "◦"
OPEN = "□"
_TOKEN_RE = re.compile(r"\[|\]|[^\s\[\]]+")


class TopParseError(ValueError):
    """A malformed TOP bracket string; the message says what is wrong and where."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One intent (``IN:``) or slot (``SL:``) node of a TOP tree."""

    label: str
    children: tuple = ()

    @property
    def is_intent(self) -> bool:
        return self.label.startswith("IN:")


def _check_label(label: str, pos: int) -> None:
    if not (label.startswith("IN:") or label.startswith("SL:")) or len(label) <= 3:
        raise TopParseError(f"token {pos}: label {label!r} must look like IN:NAME or SL:NAME")


def parse_top(text: str) -> Node:
    """Parses a TOP bracket string such as ``[IN:GET_WEATHER [SL:LOCATION Detroit ] ]``.

    Args:
      text: the bracket string (brackets may or may not be space separated).

    Returns:
      The root ``Node``; validated with ``validate``.

    Raises:
      TopParseError: on unbalanced brackets, bad labels, text outside the root, or an intent
        directly under an intent / a slot directly under a slot.
    """
    tokens = _TOKEN_RE.findall(text)
    if not tokens:
        raise TopParseError("empty TOP string")
    if tokens[0] != "[":
        raise TopParseError(f"TOP string must start with '[', got {tokens[0]!r}")
    stack: list[tuple[str, list]] = []
    root = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if root is not None:
            raise TopParseError(f"token {i}: {tok!r} after the root node was closed")
        if tok == "[":
            if i + 1 >= len(tokens) or tokens[i + 1] in "[]":
                raise TopParseError(f"token {i}: '[' must be followed by a label")
            _check_label(tokens[i + 1], i + 1)
            stack.append((tokens[i + 1], []))
            i += 2
            continue
        if tok == "]":
            if not stack:
                raise TopParseError(f"token {i}: unmatched ']'")
            label, kids = stack.pop()
            node = Node(label, tuple(kids))
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        else:
            if not stack:
                raise TopParseError(f"token {i}: word {tok!r} outside any bracket")
            stack[-1][1].append(tok)
        i += 1
    if stack:
        raise TopParseError(
            f"unbalanced brackets: {len(stack)} node(s) never closed ('{stack[-1][0]}')"
        )
    validate(root)
    return root


def validate(node: Node) -> None:
    """Checks TOP well-formedness: intent root, slots under intents, intents under slots."""
    if not node.is_intent:
        raise TopParseError(f"root must be an intent (IN:...), got {node.label!r}")
    todo = [node]
    while todo:
        n = todo.pop()
        for c in n.children:
            if isinstance(c, str):
                continue
            if c.is_intent == n.is_intent:
                kind = "intent" if n.is_intent else "slot"
                raise TopParseError(f"{c.label!r} directly under {kind} {n.label!r}")
            todo.append(c)
        if not n.is_intent and not n.children:
            raise TopParseError(f"slot {n.label!r} is empty")


def to_top(node: Node) -> str:
    """Prints a tree in canonical TOP format (single spaces, `` ]`` closers)."""
    parts = ["[" + node.label]
    for c in node.children:
        parts.append(c if isinstance(c, str) else to_top(c))
    parts.append("]")
    return " ".join(parts)


def words(node: Node) -> list[str]:
    """The words of a tree in order (the utterance, for a full tree)."""
    out = []
    for c in node.children:
        out.extend([c] if isinstance(c, str) else words(c))
    return out


def decouple(node: Node) -> Node:
    """Decoupled form: words under intents dropped; a slot holding an intent keeps only nodes."""
    nodes = tuple(decouple(c) for c in node.children if not isinstance(c, str))
    if node.is_intent or nodes:
        return Node(node.label, nodes)
    return Node(node.label, node.children)


def skeleton(node: Node) -> tuple[tuple, list[tuple[str, ...]]]:
    """Splits a (decoupled) tree into its skeleton and slot texts in pre-order of the leaves.

    Returns:
      ``(skel, texts)``: ``skel`` is the nested-tuple skeleton with ``LEAF`` for each slot text,
      ``texts[k]`` the words of the k-th leaf.
    """
    texts: list[tuple[str, ...]] = []

    def rec(n: Node) -> tuple:
        kids = [c for c in n.children if not isinstance(c, str)]
        if not n.is_intent and not kids:
            texts.append(tuple(n.children))
            return (n.label, (LEAF,))
        return (n.label, tuple(rec(c) for c in kids))

    return rec(decouple(node)), texts


def fill(skel: tuple, texts: list) -> Node:
    """Inverse of ``skeleton``: substitutes ``texts`` (pre-order) into the ``LEAF`` positions."""
    it = iter(texts)

    def rec(s: tuple) -> Node:
        label, kids = s
        out = []
        for c in kids:
            if c == LEAF:
                out.extend(next(it))
            elif c == OPEN:
                raise ValueError("cannot fill a skeleton with open substitution sites")
            else:
                out.append(rec(c))
        return Node(label, tuple(out))

    node = rec(skel)
    if next(it, None) is not None:
        raise ValueError("more texts than leaf placeholders")
    return node


def skel_to_str(s) -> str:
    """Prints a skeleton or unit, e.g. ``[IN:GET_WEATHER □ [SL:LOCATION ◦ ] ]``."""
    if s in (LEAF, OPEN):
        return s
    label, kids = s
    return " ".join(["[" + label, *(skel_to_str(c) for c in kids), "]"])


def find_spans(utterance: list[str], texts: list) -> list[tuple[int, int]]:
    """Locates each slot text as an inclusive token span of the utterance.

    Texts are searched left to right (each after the previous match), falling back to the first
    occurrence anywhere, because decoupled slots usually follow utterance order.

    Raises:
      ValueError: if a text does not occur in the utterance.
    """
    spans, start = [], 0
    for t in texts:
        n = len(t)
        hits = [i for i in range(len(utterance) - n + 1) if tuple(utterance[i : i + n]) == tuple(t)]
        if not hits:
            raise ValueError(f"slot text {' '.join(t)!r} not found in utterance")
        after = [i for i in hits if i >= start]
        i = after[0] if after else hits[0]
        spans.append((i, i + n - 1))
        start = i + n
    return spans
