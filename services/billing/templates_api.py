"""Billing's agreement templates (SPEC §3 "Templates"; admin key): the list and one template's
agreement body. The YAML files of `templates/` are read and checked once, when billing's app
is built (`read_catalog`): a broken one stops billing at start, naming the file. The checks
and the answers are the pure `services.billing.template_catalog`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response

from services.billing.deps import BillingRoute, invalid, not_found
from services.billing.openapi import TEMPLATE_BODY_SCHEMA, responses
from services.billing.template_catalog import (
    SUFFIX,
    TemplateCatalog,
    TemplateError,
    is_template_name,
)
from shared.contracts.templates import (
    TEMPLATE_NAME_MAX_LENGTH,
    TEMPLATE_NAME_PATTERN,
    TemplateList,
)
from shared.infra.http import ADMIN_ONLY, state_of

#: Billing's templates, shipped with the package (pyproject's package-data).
TEMPLATES_DIR: Final = Path(__file__).resolve().parent / "templates"

router = APIRouter(route_class=BillingRoute, tags=["templates"], dependencies=list(ADMIN_ONLY))

Templates = Annotated[TemplateCatalog, Depends(state_of(TemplateCatalog))]
_NAME_SCHEMA: Final = {
    "pattern": f"^{TEMPLATE_NAME_PATTERN}$",
    "maxLength": TEMPLATE_NAME_MAX_LENGTH,
    "example": "healthcare",
}


def read_catalog(directory: Path | None = None) -> TemplateCatalog:
    """Every `<name>.yaml` of `directory` (TEMPLATES_DIR when not given), checked; a
    TemplateError naming the directory and the file otherwise."""
    directory = TEMPLATES_DIR if directory is None else directory
    files: dict[str, str] = {}
    try:
        for path in sorted(directory.glob(f"*{SUFFIX}")):
            try:
                files[path.name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                raise TemplateError(f"{path.name}: not UTF-8 ({error.reason})") from None
        return TemplateCatalog.from_files(files)
    except (TemplateError, OSError) as error:
        raise TemplateError(f"agreement templates in {directory}: {error}") from None


async def template_name(
    name: Annotated[str, PathParam(json_schema_extra=_NAME_SCHEMA)],
) -> str:
    """The path's template name, once it has a template name's shape; 422 if not."""
    if not is_template_name(name):
        raise invalid(
            ["path", "name"],
            f"must be an industry slug: lowercase letters and digits in words joined by '-', "
            f"at most {TEMPLATE_NAME_MAX_LENGTH} characters",
        )
    return name


@router.get(
    "/v1/agreement-templates",
    summary="Ready agreements for common BPO industries",
    responses=responses(),
)
async def list_templates(templates: Templates) -> TemplateList:
    return templates.listing()


@router.get(
    "/v1/agreement-templates/{name}",
    summary="One template's agreement body (add client_id to PUT it)",
    responses=responses(404, 422, ok=TEMPLATE_BODY_SCHEMA),
)
async def get_template(
    name: Annotated[str, Depends(template_name)], templates: Templates
) -> Response:
    template = templates.get(name)
    if template is None:
        raise not_found(f"no agreement template {name}")
    return JSONResponse(template.body)
