"""The vendored OpenAPI description as the fake GitHub reads it: routing and schema validation.

Loaded once per process (`load_spec()`); validators are built lazily, once per operation and
status. OpenAPI 3.0 schemas are not quite JSON Schema: `nullable: true` is turned into a type union
(or an `anyOf` with `null`) before anything is validated, and `$ref`s resolve through a
`referencing.Registry` holding the whole (translated) document, so every pointer in it works.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "github"
OPENAPI_PATH = FIXTURES / "openapi.json"
EXAMPLES_DIR = FIXTURES / "rest-examples"
DOCUMENT_URI = "https://fake-github.invalid/openapi.json"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Path parameters whose values may contain "/" on GitHub (branch and file names, refs).
_GREEDY_PARAMS = frozenset({"path", "ref", "branch", "basehead", "head", "base"})
_PARAM_RE = re.compile(r"\{([^}]+)\}")


def openapi_to_jsonschema(node: Any) -> Any:
    """Translate OpenAPI 3.0 `nullable: true` into JSON Schema, recursively (returns a copy)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: openapi_to_jsonschema(value) for key, value in node.items()}
    if out.get("nullable") is not True:
        return out
    del out["nullable"]
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    # `allOf`/`oneOf`/`anyOf`/`$ref` with nullable: null or whatever the rest says.
    return {"anyOf": [{"type": "null"}, out]}


def _account_any_of(schema: dict[str, Any]) -> dict[str, Any]:
    fixed = {k: v for k, v in schema.items() if k != "allOf"}
    fixed["anyOf"] = schema["allOf"]
    return fixed


# Places where the upstream description contradicts itself; each fix is applied at load time.
ERRATA: list[tuple[tuple[str, ...], Callable[[dict[str, Any]], dict[str, Any]], str]] = [
    (
        (
            "paths",
            "/app/installations",
            "get",
            "responses",
            "200",
            "content",
            "application/json",
            "schema",
            "items",
            "properties",
            "account",
        ),
        _account_any_of,
        "GET /app/installations inlines `account` as allOf[simple-user, enterprise] (an account "
        "would have to be both); components/schemas/installation says anyOf, as here.",
    ),
]


def apply_errata(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with every erratum applied (only where the path exists)."""
    fixed = copy.deepcopy(document)
    for path, fix, _reason in ERRATA:
        parent: Any = fixed
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and isinstance(parent.get(path[-1]), dict):
            parent[path[-1]] = fix(parent[path[-1]])
    return fixed


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


@dataclass(frozen=True)
class Param:
    name: str
    location: str
    required: bool
    schema: Mapping[str, Any]


@dataclass
class Operation:
    """One method + path of the description, with lazily built validators."""

    spec: Spec
    operation_id: str
    method: str
    template: str
    regex: re.Pattern[str]
    params: dict[str, Param]
    request_schema: str | None  # JSON pointer into the translated document
    request_required: bool
    response_schemas: dict[str, str | None]  # status -> JSON pointer (None: no JSON body)
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict, repr=False)

    @property
    def specificity(self) -> tuple[int, int]:
        # Literal characters first: `/compare/{base}...{head}` before `/compare/{basehead}`,
        # `/branches/{branch}/protection` before `/branches/{branch}`.
        literal = _PARAM_RE.sub("", self.template)
        return (len(literal), -len(self.params))

    @property
    def query_params(self) -> dict[str, Param]:
        return {n: p for n, p in self.params.items() if p.location == "query"}

    def validator(self, key: str, pointer: str) -> Draft202012Validator:
        found = self._validators.get(key)
        if found is None:
            found = self.spec.validator_for(pointer)
            self._validators[key] = found
        return found

    def request_errors(self, body: Any) -> list[ValidationError]:
        if self.request_schema is None:
            return []
        return _sorted_errors(self.validator("request", self.request_schema), body)

    def has_response_schema(self, status: int) -> bool:
        return self.response_schemas.get(str(status)) is not None

    def declares(self, status: int) -> bool:
        return str(status) in self.response_schemas

    def response_errors(self, status: int, body: Any) -> list[ValidationError]:
        pointer = self.response_schemas.get(str(status))
        if pointer is None:
            return []
        return _sorted_errors(self.validator(str(status), pointer), body)


def _sorted_errors(validator: Draft202012Validator, instance: Any) -> list[ValidationError]:
    return sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))


def describe_error(error: ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


class Spec:
    """The reduced OpenAPI description: operations, routing, validators, example bodies."""

    # GitHub documents two templates for the same URLs: `compare/{basehead}` and the more specific
    # `compare/{base}...{head}`, which wins, so a compare is recorded as the latter.
    SAME_URLS: Mapping[str, str] = {"repos/compare-commits-with-basehead": "repos/compare-commits"}

    def __init__(self, document: dict[str, Any]) -> None:
        self.raw = apply_errata(document)
        self.translated = openapi_to_jsonschema(self.raw)
        resource = DRAFT202012.create_resource(self.translated)
        self.registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, resource)
        self.operations: list[Operation] = []
        self.by_id: dict[str, Operation] = {}
        for template, item in document["paths"].items():
            shared = item.get("parameters", [])
            for method in HTTP_METHODS:
                if method in item:
                    op = self._operation(template, method, item[method], shared)
                    self.operations.append(op)
                    self.by_id[op.operation_id] = op
        self.operations.sort(key=lambda op: op.specificity, reverse=True)

    def resolve(self, node: Any) -> tuple[Any, list[str]]:
        """Follow local `$ref`s; return the target and its pointer parts."""
        parts: list[str] = []
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            parts = [unquote(p).replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
            node = self.raw
            for part in parts:
                node = node[part]
        return node, parts

    def _operation(self, template: str, method: str, op: dict[str, Any], shared: list[Any]) -> Operation:
        params: dict[str, Param] = {}
        for raw in [*shared, *op.get("parameters", [])]:
            param, _ = self.resolve(raw)
            params[param["name"]] = Param(
                name=param["name"],
                location=param["in"],
                required=bool(param.get("required")),
                schema=openapi_to_jsonschema(param.get("schema", {})),
            )
        request_schema = None
        request_required = False
        body = op.get("requestBody")
        if body is not None:
            request_required = bool(body.get("required"))
            if "application/json" in body.get("content", {}):
                request_schema = _pointer(
                    "paths", template, method, "requestBody", "content", "application/json", "schema"
                )
        responses: dict[str, str | None] = {}
        for status, raw in op.get("responses", {}).items():
            response, parts = self.resolve(raw)
            base = parts or ["paths", template, method, "responses", status]
            if "application/json" in response.get("content", {}):
                responses[status] = _pointer(*base, "content", "application/json", "schema")
            else:
                responses[status] = None
        return Operation(
            spec=self,
            operation_id=op["operationId"],
            method=method.upper(),
            template=template,
            regex=self._route(template, params),
            params=params,
            request_schema=request_schema,
            request_required=request_required,
            response_schemas=responses,
        )

    @staticmethod
    def _route(template: str, params: dict[str, Param]) -> re.Pattern[str]:
        pattern = ""
        last = 0
        for match in _PARAM_RE.finditer(template):
            pattern += re.escape(template[last : match.start()])
            name = match.group(1)
            schema = params[name].schema if name in params else {}
            if schema.get("type") == "integer":
                pattern += rf"(?P<{name}>[0-9]+)"
            elif name in _GREEDY_PARAMS:
                pattern += rf"(?P<{name}>.+?)"
            else:
                pattern += rf"(?P<{name}>[^/]+)"
            last = match.end()
        pattern += re.escape(template[last:])
        return re.compile(pattern + r"/?")

    def match(self, method: str, raw_path: str) -> tuple[Operation, dict[str, str]] | None:
        """The operation for a request, with its (percent-decoded) path parameters."""
        for op in self.operations:
            if op.method != method:
                continue
            found = op.regex.fullmatch(raw_path)
            if found:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def validator_for(self, pointer: str) -> Draft202012Validator:
        ref = {"$ref": DOCUMENT_URI + "#" + quote(pointer, safe="/~")}
        return Draft202012Validator(ref, registry=self.registry)

    def iter_refs(self) -> Iterator[str]:
        stack: list[Any] = [self.raw]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("$ref"), str):
                    yield node["$ref"]
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)

    def example(self, name: str) -> Any:
        """A fresh copy of `rest-examples/<name>.json`, e.g. `example("checks/get")`."""
        return copy.deepcopy(_example(name))


@functools.cache
def _example(name: str) -> Any:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text(encoding="utf-8"))


@functools.cache
def load_spec() -> Spec:
    return Spec(json.loads(OPENAPI_PATH.read_text(encoding="utf-8")))
