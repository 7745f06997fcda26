"""The rules a prompt library's words and an audit spec's words both follow: a template has
one ``{term}`` slot, filled by plain replacement; an axis has two or more groups, each with a
term. They live with the prompt libraries and the audit spec imports them
(:mod:`auditkit.spec.vocabulary`), so a library and a spec are checked alike.
"""

from __future__ import annotations

TERM_SLOT = "{term}"
"""The one slot of a prompt template."""


def check_templates(templates: list[str]) -> list[str]:
    """``templates`` unchanged, or a ValueError naming the first without exactly one
    ``{term}`` slot or with any other brace (templates are filled by :func:`fill`, not
    ``str.format``)."""
    for template in templates:
        if template.count(TERM_SLOT) != 1:
            raise ValueError(f"template {template!r} must contain '{{term}}' exactly once")
        rest = template.replace(TERM_SLOT, "")
        if "{" in rest or "}" in rest:
            raise ValueError(f"template {template!r} has a brace other than the '{{term}}' slot")
    return templates


def fill(template: str, term: str) -> str:
    """Put ``term`` into a template's ``{term}`` slot (no other formatting is applied)."""
    return template.replace(TERM_SLOT, term)


def check_groups(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """``groups`` unchanged, or a ValueError when there are fewer than two or one is empty."""
    if len(groups) < 2:
        raise ValueError(f"an axis needs at least two groups, got {len(groups)}")
    for group, terms in groups.items():
        if not terms:
            raise ValueError(f"group '{group}' has no terms")
    return groups


__all__ = ["TERM_SLOT", "check_groups", "check_templates", "fill"]
