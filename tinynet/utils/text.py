"""Text from data or from a command line, made safe to print on one line of a terminal."""
from __future__ import annotations

import unicodedata

#: Unicode categories written as escapes: controls (newline, ESC, ...), format characters (BiDi overrides, ...),
#: surrogates, private use, unassigned, and the line and paragraph separators
ESCAPED_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def escape(text) -> str:
    """``text`` with control and format characters (newlines, ESC, BiDi overrides, ...) written as escapes
    (``\\x1b``, ``\\u202e``, ``\\U000e0001``), so a crafted class or file name cannot move the cursor, clear the
    screen or forge another line."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch) in ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


__all__ = ["escape", "ESCAPED_CATEGORIES"]
