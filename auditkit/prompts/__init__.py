"""Built-in, versioned prompt libraries with their sources (docs/prompt-libraries.md).

- :func:`shipped`: every library version in the package; :func:`find_library`: one by
  ``name@version``; :func:`search_terms`: where a term occurs.
- :mod:`auditkit.prompts.rules`: the one prompt-template rule (a ``{term}`` slot).
"""

from auditkit.prompts.library import (
    PromptLibrary,
    ShippedLibrary,
    content_hash,
    find_library,
    search_terms,
    shipped,
)

__all__ = [
    "PromptLibrary",
    "ShippedLibrary",
    "content_hash",
    "find_library",
    "search_terms",
    "shipped",
]
