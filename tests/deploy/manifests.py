"""Rendering the Helm chart and validating what it renders, for tests/deploy/.

Every manifest is validated as the API server would take it: the core kinds against the
Kubernetes schemas kubernetes-validate ships (strict: an unknown field is an error), the
operators' kinds (Strimzi, CloudNativePG, KEDA) against the `openAPIV3Schema` of their CRDs in
the shared kit (`../shared/k8s-crds/`, beside the repository here and in CI), made to reject
unknown fields wherever the CRD does not preserve them (the API server prunes them, or refuses
them with strict field validation: either way the setting would silently not exist).
"""

from __future__ import annotations

import copy
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import jsonschema
import kubernetes_validate
import yaml

from tools.helm import helm_binary

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CHART: Final = REPO_ROOT / "deploy" / "helm" / "tierline"
#: The second (and further) values sets the test renders besides the defaults.
VALUES_SETS: Final = sorted((CHART / "ci").glob("*.yaml"))
CRD_DIR: Final = REPO_ROOT.parent / "shared" / "k8s-crds"
#: The Kubernetes version the core kinds are validated for: the oldest the chart supports
#: (Chart.yaml's kubeVersion) among those kubernetes-validate ships schemas for.
KUBERNETES_VERSION: Final = "1.29.0"
RELEASE: Final = "tierline"
NAMESPACE: Final = "tierline"

Manifest = dict[str, Any]

#: A DNS-1123 subdomain: what every object's name must be (KafkaTopic names carry dots).
_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)


def helm(*args: str) -> str:
    """Run helm; its output, or an AssertionError carrying what it printed."""
    result = subprocess.run(
        [str(helm_binary()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def render(values: Path | None = None, *sets: str) -> list[Manifest]:
    """`helm template` of the chart (with a values file and `--set`s), as parsed documents."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        args += ["--values", str(values)]
    for assignment in sets:
        args += ["--set", assignment]
    return [doc for doc in load_all(helm(*args)) if doc]


def load_all(text: str) -> list[Any]:
    """YAML documents, parsed by libyaml (PyYAML's own parser takes seconds on the CRDs)."""
    return list(yaml.load_all(text, Loader=yaml.CSafeLoader))


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


# --- custom resources: their CRDs' schemas ---------------------------------------------------


@dataclass(frozen=True)
class CrdVersion:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): strict JSON schema} of every served version of every CRD in the kit."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR} (the shared kit beside the repository)"
    for path in files:
        for crd in load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = strict_schema(version["schema"]["openAPIV3Schema"])
    return schemas


def strict_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural OpenAPI v3 schema as a JSON schema that refuses what the API server
    would drop: an unknown field of an object is an error unless the CRD preserves unknown
    fields there (`x-kubernetes-preserve-unknown-fields`) or describes them
    (`additionalProperties`). `nullable` and `x-kubernetes-int-or-string` become JSON schema.
    The root's `metadata` is the API server's (ObjectMeta), left open here."""
    schema = copy.deepcopy(openapi)

    def walk(node: Any, *, root: bool = False) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        is_object = node.get("type") == "object" or "properties" in node
        if (
            is_object
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            properties = node.setdefault("properties", {})
            if node.get("x-kubernetes-embedded-resource"):
                for field in ("apiVersion", "kind", "metadata"):
                    properties.setdefault(field, {})
            node["additionalProperties"] = False
        for key, value in node.items():
            if key == "properties" and root:
                for field, child in value.items():
                    if field != "metadata":
                        walk(child)
            elif key in ("properties", "patternProperties", "definitions"):
                for child in value.values():
                    walk(child)
            elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
                walk(value)

    walk(schema, root=True)
    return schema


# --- every manifest ----------------------------------------------------------------------------


def problems(manifest: Manifest) -> Iterator[str]:
    """What is wrong with one rendered manifest (nothing when the API server would take it)."""
    kind, api_version = manifest.get("kind"), manifest.get("apiVersion")
    name = manifest.get("metadata", {}).get("name", "?")
    where = f"{kind}/{name}"
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        yield f"{where}: metadata.name is not a DNS-1123 subdomain"
    if "namespace" in manifest.get("metadata", {}):
        yield f"{where}: sets a namespace (the release's is used)"
    schema = crd_schemas().get((str(api_version), str(kind)))
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        for error in sorted(validator.iter_errors(manifest), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.absolute_path) or "(root)"
            yield f"{where}: {path}: {error.message}"
        return
    if "." in str(api_version).split("/")[0] and not str(api_version).endswith(".k8s.io/v1"):
        yield f"{where}: {api_version} is neither a core kind nor one of the kit's CRDs"
        return
    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:  # a jsonschema error: the first found
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        yield f"{where}: {path}: {error.message}"
    except kubernetes_validate.SchemaNotFoundError:
        yield f"{where}: no Kubernetes {KUBERNETES_VERSION} schema for {api_version} {kind}"


def all_problems(manifests: list[Manifest]) -> list[str]:
    return [problem for manifest in manifests for problem in problems(manifest)]
