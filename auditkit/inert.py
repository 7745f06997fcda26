"""Text from a spec (terms, prompts, titles, model ids, gate names) made inert for each format
auditkit writes outside HTML, whose templates escape it themselves (Jinja2 autoescape).

Spec text may hold anything YAML can: markup, template syntax, control characters, astral
characters. Each function here keeps the text readable and shown literally, and never lets it act
as syntax of the format it lands in.
"""

from __future__ import annotations

import html
import re
from typing import Any

CONTROL_PICTURES = {code: 0x2400 + code for code in range(0x20)} | {0x7F: 0x2421}
"""C0 controls and DEL -> their visible Unicode control pictures (U+2400 ...)."""

_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TERMINAL_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]|~$!])")


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    return "\N{REPLACEMENT CHARACTER}" if code > 0x9F else f"\\x{code:02x}"


def xml_text(text: str) -> str:
    """``text`` with every character XML 1.0 forbids replaced (C0 controls other than tab, line
    feed and carriage return by their control pictures; surrogates, U+FFFE and U+FFFF by U+FFFD),
    so a parser reads the document; ElementTree escapes the rest but writes these raw."""
    return _XML_FORBIDDEN.sub(_picture, text)


def xml_strings(value: Any) -> Any:
    """Every string in a JSON value (a chart spec) passed through :func:`xml_text`."""
    if isinstance(value, str):
        return xml_text(value)
    if isinstance(value, dict):
        return {xml_text(k): xml_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [xml_strings(v) for v in value]
    return value


def terminal_text(text: str) -> str:
    """``text`` for a terminal line: C0 controls (an escape sequence, a line break) as control
    pictures, DEL and C1 controls as ``\\x..``."""
    return _TERMINAL_CONTROLS.sub(_picture, text)


def markdown_text(text: str) -> str:
    """``text`` as inert Markdown: shown literally by any renderer, never markup.

    Controls become control pictures (a line break cannot start a new block); the characters
    that start Markdown syntax (links and images ``[..](..)``, emphasis, code, math ``$``,
    template braces) are backslash-escaped; ``&``, ``<`` and ``>`` become HTML entities, so raw
    HTML and autolinks are text.
    """
    escaped = _MARKDOWN_SYNTAX.sub(r"\\\1", text.translate(CONTROL_PICTURES))
    return html.escape(escaped, quote=False)


__all__ = ["CONTROL_PICTURES", "markdown_text", "terminal_text", "xml_strings", "xml_text"]
