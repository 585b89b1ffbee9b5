"""The reference service's HTTP API, rendered from its own OpenAPI document at build time.

``.. powerdrivers-openapi::``
    Every endpoint of the document, in the order the app declares them: what it does, the
    token it needs, its parameters, its request body's fields and its answers.

``.. powerdrivers-openapi::`` with ``:schemas:``
    Every schema of the document (the answers' and requests' fields, the enumerations' values).

The document is FastAPI's, built from ``create_app`` over a fleet that is never started: no
store is opened, no thread started, no socket bound. An endpoint without a description is a
build warning (so an error under ``-W``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Final

from docutils.nodes import Node
from docutils.parsers.rst import directives
from fastapi import FastAPI
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

import powerdrivers
from powerdrivers.service import _api, _app, _auth, _http_errors, _metrics, _schemas, _sse
from powerdrivers.service._config import ServiceConfig
from powerdrivers.service._fleet import Fleet

_LOG = logging.getLogger(__name__)

#: The modules the document is made from: a change to any re-reads the page.
_SOURCES: Final[tuple[ModuleType, ...]] = (_api, _app, _auth, _http_errors, _metrics, _schemas, _sse)
#: The HTTP methods an OpenAPI path item may hold, in the order they are shown.
_METHODS: Final = ("get", "put", "post", "patch", "delete")
#: What each token requirement means, as shown on an endpoint.
_TOKENS: Final = {
    "none": "none",
    "reader": "a reader's or an operator's",
    "operator": "an operator's (a reader's gets 403)",
}
#: A schema's constraints, as shown beside its type.
_CONSTRAINTS: Final = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One operation of the document: its method, path, the OpenAPI operation and the token it needs."""

    method: str
    path: str
    operation: Mapping[str, Any]
    token: str


def build_app() -> FastAPI:
    """Return the service's app over a fleet that is not started (nothing is opened or run)."""
    config = ServiceConfig(
        path=Path("service.toml"),
        store="sqlite:///never-opened.db",
        listen_host="127.0.0.1",
        listen_port=8080,
        hosts=(),
        tokens=(),
    )
    return _app.create_app(Fleet(config))


@cache
def document() -> dict[str, Any]:
    """Return the service's OpenAPI document (built once per process)."""
    return build_app().openapi()


def endpoints() -> list[Endpoint]:
    """Return every operation of the document, with the token it needs."""
    paths: Mapping[str, Mapping[str, Any]] = document()["paths"]
    return [
        Endpoint(method, path, item[method], token_of(item[method]))
        for path, item in paths.items()
        for method in _METHODS
        if method in item
    ]


def token_of(operation: Mapping[str, Any]) -> str:
    """Return the token an operation needs: ``none``, ``reader`` or ``operator``.

    The document says it: an endpoint that checks a token declares the bearer scheme
    (``security``), and one that needs an operator's documents the ``403`` a reader's gets.
    """
    if not operation.get("security"):
        return "none"
    return "operator" if "403" in operation.get("responses", {}) else "reader"


# -- reStructuredText ---------------------------------------------------------------------------


def _code(text: object) -> str:
    """Return ``text`` as an inline literal."""
    value = str(text)
    if "`" in value or not value.strip():
        escaped = value.replace("\\", "\\\\").replace("`", "\\`")
        return f":literal:`{escaped}`"
    return f"``{value}``"


def _cell(text: str) -> str:
    """Return ``text`` as one list-table cell's content (one line; a dash when empty)."""
    flat = " ".join(text.split())
    return flat or "\\-"


def label_of(*parts: str) -> str:
    """Return the reference label for an endpoint or a schema (``service-api-get-v1-hosts``)."""
    slug = re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")
    return f"service-api-{slug}"


def _schema_name(reference: str) -> str:
    return reference.rsplit("/", 1)[-1]


def _schema_link(name: str) -> str:
    return f":ref:`{name} <{label_of('schema', name)}>`"


def type_text(schema: Mapping[str, Any]) -> str:
    """Return a schema's type as inline reStructuredText: links to named schemas, ``or null``..."""
    if "$ref" in schema:
        return _schema_link(_schema_name(str(schema["$ref"])))
    if "anyOf" in schema:
        return " or ".join(type_text(part) for part in schema["anyOf"])
    if "const" in schema:
        return _code(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(_code(value) for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return "list of " + type_text(schema.get("items", {}))
    if kind == "object" and "properties" not in schema:
        return "object"
    if kind is None:
        return "any"
    return str(kind)


def _notes(schema: Mapping[str, Any], description: str | None = None) -> str:
    """Return what a field's description and constraints say, on one line."""
    parts = [description or schema.get("description") or ""]
    for branch in (schema, *schema.get("anyOf", ())):
        for key, template in _CONSTRAINTS:
            if key in branch:
                parts.append(template.format(_number(branch[key])))
        if "pattern" in branch:
            parts.append(f"matching {_code(branch['pattern'])}")
    if "default" in schema and schema["default"] is not None:
        parts.append(f"default {_number(schema['default'])}")
    return "; ".join(part.strip().rstrip(".") for part in parts if part and part.strip())


def _number(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], widths: str) -> str:
    """Return a list-table."""
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in ([*headers], *rows):
        cells = [_cell(cell) for cell in row]
        lines.append(f"   * - {cells[0]}")
        lines.extend(f"     - {cell}" for cell in cells[1:])
    return "\n".join(lines) + "\n"


def _fields_table(schema: Mapping[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = [
        [_code(name), type_text(field), "yes" if name in required else "no", _notes(field)]
        for name, field in schema.get("properties", {}).items()
    ]
    return _table(("Field", "Type", "Required", "Notes"), rows, "18 22 10 50")


def _response_body(response: Mapping[str, Any]) -> str:
    content: Mapping[str, Any] = response.get("content", {})
    shown = []
    for media, body in content.items():
        schema = body.get("schema")
        shown.append(type_text(schema) if schema else f"{_code(media)}")
    return ", ".join(shown)


def _meaning(response: Mapping[str, Any]) -> str:
    description = str(response.get("description", ""))
    # FastAPI's placeholder for an answer the endpoint does not describe.
    return "Success." if description == "Successful Response" else description


def endpoint_text(endpoint: Endpoint, schemas: Mapping[str, Mapping[str, Any]]) -> str:
    """Return one endpoint's section in reStructuredText."""
    operation = endpoint.operation
    title = _code(f"{endpoint.method.upper()} {endpoint.path}")
    parts = [
        f".. _{label_of(endpoint.method, endpoint.path)}:",
        "",
        title,
        "~" * len(title),
        "",
        inspect.cleandoc(str(operation.get("description", ""))),
        "",
        f":Token: {_TOKENS[endpoint.token]}",
    ]
    parameters = operation.get("parameters", [])
    if parameters:
        rows = [
            [
                _code(parameter["name"]),
                str(parameter["in"]),
                type_text(parameter["schema"]),
                "yes" if parameter.get("required") else "no",
                _notes(parameter["schema"], parameter.get("description")),
            ]
            for parameter in parameters
        ]
        parts += ["", _table(("Parameter", "In", "Type", "Required", "Notes"), rows, "16 8 20 10 46")]
    body = operation.get("requestBody")
    if body is not None:
        schema = body["content"]["application/json"]["schema"]
        named = schemas.get(_schema_name(str(schema.get("$ref", ""))), schema)
        closed = named.get("additionalProperties") is False
        note = " (JSON; a field not listed is refused)" if closed else " (JSON)"
        parts += ["", f":Body: {type_text(schema)}{note}", "", _fields_table(named)]
    responses: Mapping[str, Mapping[str, Any]] = operation.get("responses", {})
    rows = [
        [_code(status), _meaning(responses[status]), _response_body(responses[status])]
        for status in sorted(responses)
    ]
    parts += ["", _table(("Status", "Meaning", "Body"), rows, "10 60 30")]
    return "\n".join(parts) + "\n"


def schema_text(name: str, schema: Mapping[str, Any]) -> str:
    """Return one schema's section in reStructuredText: its fields, or an enumeration's values."""
    title = _code(name)
    parts = [f".. _{label_of('schema', name)}:", "", title, "~" * len(title), ""]
    description = inspect.cleandoc(str(schema.get("description", "")))
    if description:
        parts += [description, ""]
    if "enum" in schema:
        parts.append("Values: " + ", ".join(_code(value) for value in schema["enum"]) + ".")
    else:
        parts.append(_fields_table(schema))
    return "\n".join(parts) + "\n"


class OpenApiDirective(SphinxDirective):
    """Render the service's endpoints (or, with ``:schemas:``, its schemas) from its OpenAPI document."""

    has_content: ClassVar[bool] = False
    option_spec: ClassVar[dict[str, Any]] = {"schemas": directives.flag}

    def run(self) -> list[Node]:
        """Note the source dependencies, build the document and parse its rendering."""
        self.env.note_dependency(__file__)
        for module in _SOURCES:
            path = inspect.getsourcefile(module)
            if path:
                self.env.note_dependency(path)
        schemas: Mapping[str, Mapping[str, Any]] = document().get("components", {}).get("schemas", {})
        if "schemas" in self.options:
            text = "\n".join(schema_text(name, schema) for name, schema in schemas.items())
        else:
            found = endpoints()
            for endpoint in found:
                self._check(endpoint)
            text = "\n".join(endpoint_text(endpoint, schemas) for endpoint in found)
        return self.parse_text_to_nodes(text, allow_section_headings=True)

    def _check(self, endpoint: Endpoint) -> None:
        if not str(endpoint.operation.get("description", "")).strip():
            where = f"{endpoint.method.upper()} {endpoint.path}"
            _LOG.warning(
                "%s has no description (its function's docstring)", where, location=self.get_location()
            )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the ``powerdrivers-openapi`` directive."""
    app.add_directive("powerdrivers-openapi", OpenApiDirective)
    return {"version": powerdrivers.__version__, "parallel_read_safe": True, "parallel_write_safe": True}
