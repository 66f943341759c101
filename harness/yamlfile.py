"""YAML files -> data with the line and column of every value, under stated limits.

One pass over the parser's events (PyYAML's C parser where it is installed) builds the node graph
without recursion: each node is visited once, so aliases cost nothing extra, and the limits below
hold against alias bombs, recursive anchors, deep nesting and huge files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import ConfigError, Issue, ValidationFailed

Marks = dict[tuple[str, ...], tuple[int, int]]

MAX_FILE_BYTES = 64 * 1024 * 1024  # a YAML file larger than this is refused before it is read
MAX_DEPTH = 100  # mappings and lists nested deeper than this are refused
MAX_ALIAS_VALUES = 100_000  # values that aliases (*name) may add to a document when expanded
LIMITS = (
    f"limits: {MAX_FILE_BYTES // 2**20} MiB per YAML file, nesting depth {MAX_DEPTH}, "
    f"{MAX_ALIAS_VALUES:,} values added by aliases"
)
STR_TAG = "tag:yaml.org,2002:str"
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Refused(Exception):
    """The document breaks a limit or a rule; raised with the offending mark."""

    def __init__(self, mark: Any, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


@dataclass
class _Open:
    """A mapping or list being composed: its node, key path, and the key waiting for its value."""

    node: yaml.Node
    path: tuple[str, ...]
    size: int = 1
    key: yaml.Node | None = None
    anchor: str | None = None


class _Composer:
    """Builds the node graph from parser events in one pass, without recursion.

    Each node is visited once: its position is recorded under the first key path that reaches it, so
    aliases cost nothing extra. Depth, alias expansion and recursive anchors are checked as it goes.
    """

    def __init__(self, file: str):
        self.file = file
        self.resolver = yaml.SafeLoader("")
        self.anchors: dict[str, tuple[yaml.Node, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Open] = []
        self.marks: Marks = {}
        self.issues: list[Issue] = []
        self.added = 0  # values aliases add when expanded
        self.root: yaml.Node | None = None

    def compose(self, events: Any) -> yaml.Node | None:
        documents = 0
        for event in events:
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Refused(event.start_mark, "expected one document, found a second")
            elif isinstance(event, yaml.AliasEvent):
                self._alias(event)
            elif isinstance(event, yaml.ScalarEvent):
                self._scalar(event)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                self._start(event)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                self._end()
        return self.root

    def _path(self) -> tuple[str, ...]:
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.node, yaml.SequenceNode):
            return (*top.path, str(len(top.node.value)))
        key = top.key
        return (*top.path, str(key.value) if isinstance(key, yaml.ScalarNode) else "?")

    def _place(self, node: yaml.Node, size: int) -> None:
        """Attach a finished node (or an alias's target) to the open parent."""
        if not self.stack:
            self.root = node
            return
        top = self.stack[-1]
        top.size += size
        if isinstance(top.node, yaml.SequenceNode):
            top.node.value.append(node)
        elif top.key is None:
            top.key = node
            if isinstance(node, yaml.ScalarNode):
                self.marks[(*top.path, f"{node.value}#key")] = _pos(node.start_mark)
        else:
            top.node.value.append((top.key, node))
            top.key = None

    def _anchor(self, event: Any, node: yaml.Node, size: int) -> None:
        if event.anchor is not None:
            self.anchors[event.anchor] = (node, size)

    def _scalar(self, event: Any) -> None:
        tag = event.tag
        if (tag is None or tag == "!") and not event.implicit[0]:
            tag = STR_TAG  # quoted or block text: a string, no resolver needed (the hot path)
        elif tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(
            tag, event.value, event.start_mark, event.end_mark, style=event.style
        )
        self._mark(event.start_mark)
        self._anchor(event, node, 1)
        self._place(node, 1)

    def _mark(self, mark: Any) -> None:
        """Record where the value about to be placed starts (keys are recorded in ``_place``)."""
        top = self.stack[-1] if self.stack else None
        if top is None or isinstance(top.node, yaml.SequenceNode) or top.key is not None:
            self.marks.setdefault(self._path(), _pos(mark))

    def _start(self, event: Any) -> None:
        if len(self.stack) >= MAX_DEPTH:
            raise _Refused(event.start_mark, f"nested deeper than {MAX_DEPTH} levels ({LIMITS})")
        mapping = isinstance(event, yaml.MappingStartEvent)
        kind = yaml.MappingNode if mapping else yaml.SequenceNode
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(kind, None, event.implicit)
        node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
        self._mark(event.start_mark)
        path = self._path()
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Open(node, path, anchor=event.anchor))

    def _end(self) -> None:
        done = self.stack.pop()
        if done.anchor is not None:
            self.open_anchors.discard(done.anchor)
            self.anchors[done.anchor] = (done.node, done.size)
        if isinstance(done.node, yaml.MappingNode):
            self._duplicates(done.node)
        self._place(done.node, done.size)

    def _alias(self, event: Any) -> None:
        if event.anchor in self.open_anchors:
            raise _Refused(
                event.start_mark,
                f"alias *{event.anchor} refers to its own anchor (a recursive structure)",
            )
        if event.anchor not in self.anchors:
            raise _Refused(event.start_mark, f"alias *{event.anchor} names no anchor before it")
        node, size = self.anchors[event.anchor]
        self.added += size
        if self.added > MAX_ALIAS_VALUES:
            raise _Refused(
                event.start_mark,
                f"aliases expand the document by more than {MAX_ALIAS_VALUES:,} values ({LIMITS})",
            )
        self._mark(event.start_mark)
        self._place(node, size)

    def _duplicates(self, node: yaml.MappingNode) -> None:
        seen: set[str] = set()
        for key, _ in node.value:
            name = str(key.value)
            if name in seen and name != "<<":
                mark = key.start_mark
                self.issues.append(
                    Issue(self.file, mark.line + 1, mark.column + 1, f"duplicate key {name!r}")
                )
            seen.add(name)


def _pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _yaml_issue(file: str, mark: Any, message: str) -> ValidationFailed:
    line, col = _pos(mark) if mark is not None else (None, None)
    return ValidationFailed([Issue(file, line, col, message)])


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse YAML text (one document) with the limits above; returns the data and its positions."""
    composer = _Composer(file)
    try:
        node = composer.compose(yaml.parse(text, Loader=_Loader))
        if composer.issues:
            raise ValidationFailed(composer.issues)
        data = None if node is None else yaml.SafeLoader("").construct_document(node)
    except _Refused as exc:
        raise _yaml_issue(file, exc.mark, f"invalid YAML: {exc.message}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise _yaml_issue(
            file, getattr(exc, "problem_mark", None), f"invalid YAML: {problem}"
        ) from None
    return data, composer.marks


def load_yaml(path: Path) -> tuple[Any, Marks]:
    """Parse a YAML file; returns the data and a map from key path to (line, column)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # _read reports the missing or unreadable file
    if size > MAX_FILE_BYTES:
        raise ValidationFailed(
            [Issue(str(path), None, None, f"file is {size / 2**20:.1f} MiB; {LIMITS}")]
        )
    return parse_yaml(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A UTF-8 text file, or a ConfigError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
