"""The agreement-template documents of SPEC §3 "Templates" (billing):
`GET /v1/agreement-templates` answers a `TemplateList`; `GET /v1/agreement-templates/{name}`
answers the template's agreement body, an agreement without `client_id` (its schema is the
agreement's, in billing's OpenAPI document).

A template's `name` is its industry slug (SPEC §13): lowercase words joined by hyphens.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from shared.contracts.wire import Document

#: An industry slug (`healthcare`, `public-sector`), unanchored; at most 64 characters.
TEMPLATE_NAME_PATTERN: Final = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
TEMPLATE_NAME_MAX_LENGTH: Final = 64

TemplateName = Annotated[
    str, Field(pattern=f"^{TEMPLATE_NAME_PATTERN}$", max_length=TEMPLATE_NAME_MAX_LENGTH)
]


class TemplateSummary(Document):
    """One entry of the list: the slug, the industry's display name and what it covers."""

    name: TemplateName
    industry: str
    description: str


class TemplateList(Document):
    """`GET /v1/agreement-templates`, sorted by `name`."""

    templates: tuple[TemplateSummary, ...]
