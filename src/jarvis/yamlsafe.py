"""A YAML loader that refuses duplicated mapping keys (PyYAML's ``safe_load`` keeps the last value silently).

DVC (ruamel) already refuses a params.yaml with a duplicated key; ``jarvis`` and the Snakefile load params through
:func:`load`, so every entry point agrees and the user sees which key is duplicated, and on which lines.

Parsing runs in libyaml (PyYAML's ``CSafeLoader``, in PyYAML's wheels) where it is built: the pure-Python parser took
about 1 s per params.yaml or dvc.lock on 2 cores, paid by every stage process and every Snakemake invocation (issue 13).
The constructor, and so the values and the duplicate check, are the same Python code either way.
"""

from __future__ import annotations

from typing import IO, Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping holds the same key twice; the message names the key and both (1-based) lines."""


# libyaml's parser with PyYAML's SafeConstructor and Resolver; the pure-Python SafeLoader where libyaml is absent.
SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class UniqueKeyLoader(SafeLoader):  # type: ignore[misc,valid-type]
    """A safe loader whose mappings reject a key that appears twice (merge keys ``<<`` excepted)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:  # `<<: *anchor` entries are overridden by explicit keys by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # unhashable key: SafeConstructor reports it below
                continue
            if first is not None:
                raise DuplicateKeyError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicated key {key!r} (line {first} and line {line})", key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load`` that raises :class:`DuplicateKeyError` on a duplicated mapping key."""
    return yaml.load(stream, Loader=UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass


def safe_load(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load`` through :data:`SafeLoader` (libyaml where built): files other tools write (dvc.lock)."""
    return yaml.load(stream, Loader=SafeLoader)  # noqa: S506 -- a safe loader
