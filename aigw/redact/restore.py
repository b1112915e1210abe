"""Put original values back in place of ``<ENTITY_N>`` placeholders in answers.

``StreamRestorer`` works on a stream of text deltas: it emits everything at
once except a suffix that could still grow into a placeholder (``"<EM"``), so
its hold-back is bounded by the longest placeholder, minus one character.
"""
from __future__ import annotations

import re

# Placeholders are "<" + [A-Z0-9_]+ + ">" (see engine._Numbering); one pass, linear.
_PLACEHOLDER = re.compile(r"<[A-Z0-9_]{1,80}>")


def restore_text(text: str, restore_map: dict[str, str]) -> str:
    """Replace every known placeholder in ``text``; unknown ones are left alone."""
    if not restore_map or "<" not in text:
        return text
    return _PLACEHOLDER.sub(lambda m: restore_map.get(m.group(0), m.group(0)), text)


class StreamRestorer:
    """Restores placeholders split across any number of chunks."""

    def __init__(self, restore_map: dict[str, str]):
        self._map = dict(restore_map)
        self._held = ""
        self._max = max((len(k) for k in self._map), default=0)
        # every proper prefix of every placeholder: what may still be completed
        self._prefixes = {k[:i] for k in self._map for i in range(1, len(k))}

    @property
    def held(self) -> str:
        """The text held back right now (for tests and diagnostics)."""
        return self._held

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now."""
        if not self._map:
            return text
        buf = self._held + text
        cut = self._hold_from(buf)
        self._held = buf[cut:]
        return restore_text(buf[:cut], self._map)

    def flush(self) -> str:
        """End of stream: emit whatever is held."""
        out, self._held = restore_text(self._held, self._map), ""
        return out

    def _hold_from(self, buf: str) -> int:
        # only a "<" within the last (longest placeholder - 1) characters can start
        # an incomplete placeholder; "<" appears in a placeholder only at its start,
        # so at most one position qualifies
        start = max(0, len(buf) - self._max + 1)
        i = buf.find("<", start)
        while i >= 0:
            if buf[i:] in self._prefixes:
                return i
            i = buf.find("<", i + 1)
        return len(buf)
