"""Agreement templates (SPEC §3 "Templates", §13) from the text of their YAML files. Pure: the
files are read once at start by `templates_api.read_catalog`; this module checks what they say
and answers the two routes from it.

A file `<name>.yaml` (`name` an industry slug) is an agreement body without `client_id`, plus
a top-level `template: {industry, description}` entry for the list. That entry is stripped, and
the body served is the agreement as billing serves any agreement (`Agreement.to_wire()`, every
default spelled out) less `client_id` and `version`: adding `client_id` alone makes it a valid
PUT (SPEC §13), and a template that is not a valid agreement never gets that far — it is a
`TemplateError` naming the file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from shared.contracts.templates import (
    TEMPLATE_NAME_MAX_LENGTH,
    TEMPLATE_NAME_PATTERN,
    TemplateList,
    TemplateSummary,
)
from shared.domain.agreement.agreement import (
    Agreement,
    parse_agreement,
    read_agreement_yaml,
    wire_size,
)
from shared.domain.agreement.fields import MAX_WIRE_BYTES

SUFFIX: Final = ".yaml"
#: The top-level key of a template file that holds its list entry; never served.
METADATA_KEY: Final = "template"
#: The client id a template is checked under: any valid id would do.
PLACEHOLDER_CLIENT_ID: Final = "template-check"
_NAME: Final = re.compile(TEMPLATE_NAME_PATTERN)
_MAX_INDUSTRY: Final = 100
_MAX_DESCRIPTION: Final = 500
#: Fields a template must leave out: the PUT's path names the client, the store the version.
_NOT_IN_A_TEMPLATE: Final = ("client_id", "version")


class TemplateError(ValueError):
    """A template file billing cannot serve; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Template:
    summary: TemplateSummary
    #: The agreement body (JSON-ready), without `client_id` and `version`.
    body: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.summary.name


def is_template_name(value: str) -> bool:
    """Whether `value` has the shape of a template name (an industry slug)."""
    return len(value) <= TEMPLATE_NAME_MAX_LENGTH and _NAME.fullmatch(value) is not None


def parse_template(file_name: str, text: str) -> Template:
    """The template a file `<name>.yaml` holds; TemplateError naming `file_name` if it is not
    one billing can serve."""
    try:
        return _parse(file_name, text)
    except ValidationError as error:
        raise TemplateError(f"{file_name}: not a valid agreement: {_problems(error)}") from None
    except ValueError as error:  # not YAML, not a mapping, our own checks
        raise TemplateError(f"{file_name}: {error}") from None


def _parse(file_name: str, text: str) -> Template:
    name = file_name.removesuffix(SUFFIX)
    if not file_name.endswith(SUFFIX) or not is_template_name(name):
        raise ValueError(
            f"a template file is <name>{SUFFIX}, its name an industry slug "
            f"({TEMPLATE_NAME_PATTERN}, at most {TEMPLATE_NAME_MAX_LENGTH} characters)"
        )
    data = dict(read_agreement_yaml(text))
    summary = _summary(name, data.pop(METADATA_KEY, None))
    for field in _NOT_IN_A_TEMPLATE:
        if field in data:
            raise ValueError(f"{field}: a template has none (the PUT gives it)")
    agreement = parse_agreement({**data, "client_id": PLACEHOLDER_CLIENT_ID})
    if (size := wire_size(agreement)) > MAX_WIRE_BYTES:
        raise ValueError(f"takes {size} bytes on the agreements topic; at most {MAX_WIRE_BYTES}")
    return Template(summary=summary, body=template_body(agreement))


def template_body(agreement: Agreement) -> dict[str, Any]:
    """`agreement` as a template serves it: its wire form without `client_id` and `version`."""
    wire = agreement.to_wire()
    return {key: value for key, value in wire.items() if key not in _NOT_IN_A_TEMPLATE}


def _summary(name: str, metadata: Any) -> TemplateSummary:
    if not isinstance(metadata, Mapping) or set(metadata) != {"industry", "description"}:
        raise ValueError(
            f"{METADATA_KEY}: needs exactly {{industry: <display name>, description: <text>}}"
        )
    fields: dict[str, str] = {}
    for key, limit in (("industry", _MAX_INDUSTRY), ("description", _MAX_DESCRIPTION)):
        value = metadata[key]
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise ValueError(f"{METADATA_KEY}.{key}: needs a text of 1..{limit} characters")
        fields[key] = " ".join(value.split())
    return TemplateSummary(name=name, **fields)


def _problems(error: ValidationError) -> str:
    """`loc: msg` of each problem (at most three), as an operator reads them."""
    problems = error.errors()
    shown = [
        f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: "
        + str(problem["msg"]).removeprefix("Value error, ")
        for problem in problems[:3]
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(shown) + more


class TemplateCatalog:
    """Every template, by name; listed sorted by name (SPEC §13)."""

    def __init__(self, templates: Iterable[Template]) -> None:
        by_name: dict[str, Template] = {}
        for template in templates:
            if template.name in by_name:
                raise TemplateError(f"{template.name}{SUFFIX}: a second template of that name")
            by_name[template.name] = template
        self._by_name = dict(sorted(by_name.items()))

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> TemplateCatalog:
        """The catalog of template files (file name → text); TemplateError naming the first
        file that is not a template billing can serve, or when there is none at all."""
        if not files:
            raise TemplateError(f"no agreement template (<name>{SUFFIX}) found")
        return cls(parse_template(name, text) for name, text in sorted(files.items()))

    def listing(self) -> TemplateList:
        return TemplateList(templates=tuple(t.summary for t in self._by_name.values()))

    def get(self, name: str) -> Template | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Template]:
        return iter(self._by_name.values())
