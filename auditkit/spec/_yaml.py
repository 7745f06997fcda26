"""Spec YAML read within fixed bounds: a size cap, UTF-8 only, bounded nesting, a bounded number
of values (aliases expanded, so an anchor bomb is refused before it is built) and no key given
twice in one mapping. Every refusal is a :class:`SpecError` with the line where it applies."""

from __future__ import annotations

import codecs
from typing import Any

import yaml

from auditkit.errors import SpecError

MAX_SPEC_BYTES = 1 << 20
"""Largest spec file read (1 MiB); a larger one is refused before it is parsed."""
MAX_NESTING = 64
"""Deepest nesting of YAML mappings and lists in a spec."""
MAX_VALUES = 100_000
"""Most YAML values (scalars, mappings, lists) a spec may hold, every alias counted as the
values it repeats."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: 10x faster
_MERGE = "tag:yaml.org,2002:merge"
_OTHER_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"


def decode_spec(data: bytes, *, source: str) -> str:
    """The text of a spec file's bytes: UTF-8, a leading UTF-8 byte-order mark dropped; a
    UTF-16 or UTF-32 file, or bytes that are not UTF-8, are refused with their line."""
    check_size(len(data), source=source)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise SpecError(
                [f"the file is {name} encoded (it starts with a {name} byte-order mark)"],
                source=source,
                hint="save the spec as UTF-8.",
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            [f"line {line}, column {column}: byte {data[exc.start]:#04x} is not UTF-8 text"],
            source=source,
            hint="save the spec as UTF-8 (a spec is text; remove any binary content).",
        ) from None


def check_size(size: int, *, source: str) -> None:
    """Refuse a spec of more than :data:`MAX_SPEC_BYTES` bytes."""
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            [f"the spec is {size:,} bytes, more than the limit of {MAX_SPEC_BYTES:,} (1 MiB)"],
            source=source,
            hint="a spec names words and settings; long word lists belong in fewer, shorter "
            "lists (is this the right file?).",
        )


class _BoundedLoader(_Loader):
    """The safe loader, refusing a key given twice in one mapping and locating a value that
    cannot be built (an impossible date)."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, OverflowError, TypeError, ArithmeticError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value {node.value!r}: {exc}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor refuses it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        f"while reading the mapping at line {node.start_mark.line + 1}",
                        None,
                        f"key {key!r} is given twice (line {first.start_mark.line + 1} and "
                        f"line {key_node.start_mark.line + 1}); keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, *, source: str) -> tuple[Any, yaml.Node | None]:
    """The data of one YAML document and its node tree (for the lines of later problems)."""
    check_size(len(text.encode("utf-8", "surrogatepass")), source=source)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SpecError(
            [f"character {exc.start}: a lone surrogate ({text[exc.start]!r}) is not text"],
            source=source,
        ) from None
    try:
        data, root = _load(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(
            [f"line {line}, column {column}: the character {chr(code)!r} cannot be in YAML text"],
            source=source,
            hint="remove the control character (write it as an escape, \\t, in double quotes).",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"invalid YAML at {_line(mark)}: {problem}"], source=source) from None
    return data, root


def _load(text: str) -> tuple[Any, yaml.Node | None]:
    """The checked document: its values counted and its nesting measured as the parser meets
    them, its aliases' expansion measured, then built."""
    aliased = _check_events(text)
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None and aliased:
            _check_expansion(root)
        return (loader.construct_document(root) if root is not None else None), root
    finally:
        loader.dispose()


class _Refused(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


def _check_events(text: str) -> bool:
    """Refuse nesting deeper than :data:`MAX_NESTING` and more than :data:`MAX_VALUES` values
    as the parser meets them (events come one at a time, so neither is ever built). Whether the
    text holds an alias: without one, no node is shared, so these two counts are already those
    of the built document and :func:`_check_expansion` has nothing to add."""
    depth = values = 0
    aliased = False
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            aliased = True
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise _Refused(
                    f"nested more than {MAX_NESTING} levels deep (mappings and lists)",
                    event.start_mark,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            values += 1
            if values > MAX_VALUES:
                raise _Refused(f"more than {MAX_VALUES:,} values", event.start_mark)
    return aliased


def _check_expansion(root: yaml.Node) -> None:
    """Refuse aliases that repeat more than :data:`MAX_VALUES` values in all (an anchor bomb),
    that nest deeper than :data:`MAX_NESTING` once expanded, or an alias inside the collection
    it names (a loop)."""
    sizes: dict[int, tuple[int, int]] = {}  # node -> (values, height), each node once
    open_nodes: set[int] = set()

    def measure(node: yaml.Node) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Refused("an alias refers to a collection that contains it", node.start_mark)
        total, height = 1, 0
        if isinstance(node, yaml.CollectionNode):
            open_nodes.add(key)
            children = (
                [n for pair in node.value for n in pair]
                if isinstance(node, yaml.MappingNode)
                else node.value
            )
            for child in children:
                values, below = measure(child)
                total += values
                height = max(height, below + 1)
                if total > MAX_VALUES:
                    raise _Refused(
                        f"its aliases expand to more than {MAX_VALUES:,} values",
                        node.start_mark,
                    )
                if height > MAX_NESTING:
                    raise _Refused(
                        f"its aliases nest more than {MAX_NESTING} levels deep", node.start_mark
                    )
            height = max(height, 1)
            open_nodes.discard(key)
        sizes[key] = (total, height)
        return total, height

    measure(root)


__all__ = ["MAX_NESTING", "MAX_SPEC_BYTES", "MAX_VALUES", "check_size", "decode_spec", "read_yaml"]
