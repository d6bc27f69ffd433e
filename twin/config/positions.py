"""Where each key and value of a campaign file was written, so that every problem names its line and column, and
the dotted key paths the messages use (``models.heat.grid.shape[0]``)."""

from __future__ import annotations

from typing import Any

from twin.config.messages import key_text

#: aliases of nodes that themselves hold aliases, nested this deep at most
MAX_ALIAS_DEPTH = 4


class Positions:
    """Where each key and value of the data was written: key path -> ``(line, column)``, 1-based.

    ``alias`` maps the path of an alias (or of a key merged by ``<<``) to the path of the node it repeats, so that a
    position inside an aliased node is found at the anchor's text.
    """

    def __init__(self, filename: str = ""):
        #: the file name as given (problems name the file as the user wrote it)
        self.filename = filename
        self.value: dict[tuple, tuple[int, int]] = {}
        self.key: dict[tuple, tuple[int, int]] = {}
        self.alias: dict[tuple, tuple] = {}

    def lookup(self, path: tuple, key: bool = False) -> tuple[int | None, int | None]:
        """Position of ``path`` (of its key with ``key``), else of the nearest enclosing node that has one."""
        for _ in range(MAX_ALIAS_DEPTH + 8):
            table = self.key if key else self.value
            if path in table:
                return table[path]
            if key and path in self.value:
                return self.value[path]
            for n in range(len(path), 0, -1):
                if path[:n] in self.alias:
                    path = self.alias[path[:n]] + path[n:]
                    break
            else:
                break
        for n in range(len(path), -1, -1):
            for table in ((self.key, self.value) if key else (self.value, self.key)):
                if path[:n] in table:
                    return table[path[:n]]
        return None, None

    def at(self, path: tuple, data: Any, key: bool = False) -> tuple[int | None, int | None]:
        """Position for a problem at ``path`` of ``data``: a whole mapping or list is pointed at by its key, a scalar
        at its value (at its key with ``key``, e.g. for an unknown key)."""
        node = data
        for p in path:
            try:
                node = node[p]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if isinstance(node, (dict, list)) and path in self.key:
            return self.key[path]
        return self.lookup(path, key)


def dotted(path: tuple) -> str:
    """``models.heat.grid.shape[0]`` for the key path ``('models', 'heat', 'grid', 'shape', 0)``."""
    if len(path) > 12:
        # a path through 5,000 levels would fill the screen: its ends say where it is
        return f"{dotted(path[:4])}...({len(path) - 7} levels)...{dotted(path[-3:]).lstrip('.')}"
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{key_text(p)}" if out else key_text(p))
    return out
