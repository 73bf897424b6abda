"""JSON Schema dialects for structured output (pure).

The canonical ``ResponseFormat.schema`` is plain JSON Schema (OpenAI ``json_schema.schema``, Anthropic
``output_config.format.schema``, Gemini ``responseJsonSchema``; Gemini's OpenAPI-style ``responseSchema`` is converted
to JSON Schema when decoded). Providers accept different subsets:

- Anthropic structured outputs (``for_anthropic``): every object gets ``additionalProperties: false``; ``oneOf``
  becomes ``anyOf``; ``type: [X, "null"]`` becomes ``anyOf``; string formats outside Anthropic's list and
  constraints it does not enforce (``minimum``, ``maxLength``, ``pattern``, ...) move into the ``description``, as the
  official SDK's ``transform_schema`` does, so the model may still follow them.
- Gemini ``responseJsonSchema`` (``for_gemini``): ``$schema``, ``$id`` and ``const`` are not accepted (``const``
  becomes a one-value ``enum``), ``oneOf`` becomes ``anyOf``.
- Schemas Gemini clients send (``with_lowercase_types``): Gemini accepts OpenAPI-style upper-case type names
  (``"OBJECT"``) even in ``responseJsonSchema``, and Gemini CLI sends them; JSON Schema (OpenAI, Anthropic) knows only
  lower-case ones.
"""

from __future__ import annotations

from typing import Any

_ANTHROPIC_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_DROP_ALWAYS = ("$schema", "$id")


# Keywords whose value is a schema, a list of schemas, or a map of name -> schema.
_SUB_SCHEMA = ("items", "not", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
               "propertyNames", "if", "then", "else", "additionalItems")  # fmt: skip
_SUB_LIST = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_SUB_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def with_lowercase_types(schema: Any) -> Any:
    """A JSON Schema whose ``type`` names are lower case wherever they are type keywords (never a property that happens
    to be called "type"); ``TYPE_UNSPECIFIED`` is dropped. Anything that is not a schema object is returned as is."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    t = out.get("type")
    if isinstance(t, str):
        low = t.lower()
        if low == "type_unspecified":
            del out["type"]
        else:
            out["type"] = low
    elif isinstance(t, list):
        out["type"] = [x.lower() if isinstance(x, str) else x for x in t]
    for key in _SUB_SCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = with_lowercase_types(out[key])
    for key in _SUB_LIST:
        if isinstance(out.get(key), list):
            out[key] = [with_lowercase_types(s) for s in out[key]]
    for key in _SUB_MAP:
        if isinstance(out.get(key), dict):
            out[key] = {name: with_lowercase_types(s) for name, s in out[key].items()}
    return out


def _primitive(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def for_anthropic(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as Anthropic's structured outputs accept it."""
    src = {k: v for k, v in schema.items() if k not in _DROP_ALWAYS}
    out: dict[str, Any] = {}
    defs = src.pop("$defs", None)
    if isinstance(defs, dict):
        out["$defs"] = {k: for_anthropic(v) for k, v in defs.items() if isinstance(v, dict)}
    ref = src.pop("$ref", None)
    if ref is not None:
        out["$ref"] = ref
        return out
    type_ = src.pop("type", None)
    if isinstance(type_, list):
        names = [t for t in type_ if isinstance(t, str)]
        if len(names) == 1:
            type_ = names[0]
        else:
            rest = {k: v for k, v in src.items() if k in ("description", "title")}
            body = {k: v for k, v in src.items() if k not in ("description", "title")}
            return {**rest, "anyOf": [for_anthropic({**body, "type": t}) for t in names]}
    any_of = src.pop("anyOf", None)
    one_of = src.pop("oneOf", None)
    all_of = src.pop("allOf", None)
    enum = src.get("enum")
    if isinstance(enum, list) and enum and all(_primitive(v) for v in enum):
        out["enum"] = src.pop("enum")
    if "const" in src and _primitive(src["const"]):
        out["const"] = src.pop("const")
    literal = "enum" in out or "const" in out
    variants = any_of if isinstance(any_of, list) else one_of
    if isinstance(variants, list):
        out["anyOf"] = [for_anthropic(v) for v in variants if isinstance(v, dict)]
    elif isinstance(all_of, list):
        out["allOf"] = [for_anthropic(v) for v in all_of if isinstance(v, dict)]
    elif not literal and isinstance(type_, str):
        out["type"] = type_
    for key in ("description", "title"):
        if isinstance(src.get(key), str):
            out[key] = src.pop(key)
    if type_ == "object":
        props = src.pop("properties", None) or {}
        out["properties"] = {k: for_anthropic(v) for k, v in props.items() if isinstance(v, dict)}
        src.pop("additionalProperties", None)
        out["additionalProperties"] = False
        required = src.pop("required", None)
        if isinstance(required, list):
            out["required"] = required
    elif type_ == "string":
        fmt = src.pop("format", None)
        if fmt in _ANTHROPIC_FORMATS:
            out["format"] = fmt
        elif fmt is not None:
            src["format"] = fmt
    elif type_ == "array":
        items = src.pop("items", None)
        if isinstance(items, dict):
            out["items"] = for_anthropic(items)
        min_items = src.pop("minItems", None)
        if min_items in (0, 1):
            out["minItems"] = min_items
        elif min_items is not None:
            src["minItems"] = min_items
    src.pop("default", None)
    if src:
        extra = "{" + ", ".join(f"{k}: {v}" for k, v in src.items()) + "}"
        out["description"] = f"{out['description']}\n\n{extra}" if "description" in out else extra
    return out


def for_gemini(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema as Gemini's ``responseJsonSchema`` accepts it."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROP_ALWAYS:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "oneOf" and isinstance(value, list):
            out["anyOf"] = [for_gemini(v) if isinstance(v, dict) else v for v in value]
        elif key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {k: for_gemini(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = for_gemini(value)
        elif key in ("anyOf", "prefixItems") and isinstance(value, list):
            out[key] = [for_gemini(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out
