"""YAML documents with the line of every field, and duplicate keys refused.

PyYAML's ``safe_load`` keeps the last of two equal keys and forgets where each value came
from. ``read_documents`` composes the node tree instead, builds the plain values from it and
records, for every field path (``spec.template.spec.containers[0].image``, map entries also as
``metadata.annotations[key]``), the 1-based line it starts on, so a validation message can say
``file:line``. A key defined twice in one mapping is an error as ``kubectl --validate=strict``
makes it; the later value wins only so that the rest of the document can still be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


class YamlError(ValueError):
    """The text is not YAML at all; the message is one line with the line number."""


@dataclass(frozen=True, slots=True)
class Document:
    """One decoded document, the line of each field path, and its duplicate-key problems."""

    value: Any
    lines: dict[str, int] = field(default_factory=dict)
    #: ``(line, message, path)`` per key defined twice.
    duplicates: tuple[tuple[int, str, str], ...] = ()

    def line_of(self, path: str) -> int:
        """The line of ``path`` or of its nearest recorded parent (the document's start)."""
        while path not in self.lines and path:
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get(path, 0)


def read_documents(text: str) -> list[Document]:
    """Every non-empty document of ``text``; raises ``YamlError`` for a syntax error."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlError(f"invalid YAML: {where}{problem}".replace("\n", " ")) from None
    docs: list[Document] = []
    for node in nodes:
        if node is None:
            continue
        builder = _Builder()
        try:
            value = builder.value(node, "")
        except yaml.YAMLError as exc:
            raise YamlError(f"invalid YAML: {exc}".replace("\n", " ")) from None
        if value is not None:
            docs.append(Document(value, builder.lines, tuple(builder.duplicates)))
    return docs


class _Builder:
    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.duplicates: list[tuple[int, str, str]] = []
        # Scalars (ints, booleans, timestamps, ...) are resolved exactly as safe_load does.
        self.constructor = yaml.SafeLoader("")

    def value(self, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)  # YAML merge keys (<<) as safe_load has them
            out: dict[Any, Any] = {}
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = self.constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | float | bool) or key is None:
                    key = str(key)
                line = key_node.start_mark.line + 1
                sub = f"{path}.{key}" if path else str(key)
                if key in first:
                    self.duplicates.append(
                        (line, f'mapping key "{key}" already defined at line {first[key]}', sub)
                    )
                first[key] = line
                self.lines[sub] = line
                self.lines[f"{path}[{key}]"] = line
                out[key] = self.value(value_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)
