"""The model capability catalog (``models.yaml`` beside this module): entries by provider type, matched by name.

``Catalog.lookup(provider_type, model)`` gives the ``Capabilities`` of an upstream model name: the first entry whose
pattern matches, else the type's conservative default for unknown models. ``resolve`` applies a config override
(``models[].capabilities``) on top, optionally starting from another entry (``like: <entry name>``). The file is read
once per process (``catalog()``); everything else here is pure.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extproc.translation import capabilities as caps_mod
from extproc.translation.capabilities import Capabilities

PATH = Path(__file__).with_name("models.yaml")
_CACHE_LIMIT = 1024  # looked-up names kept per catalog (default_provider lets clients choose names: bounded)


class CatalogError(ValueError):
    """A catalog (or an override) that does not parse; the message names the entry and the field."""


@dataclass(slots=True, frozen=True)
class Entry:
    name: str
    patterns: tuple[str, ...]
    regex: re.Pattern[str]
    caps: Capabilities


class Catalog:
    __slots__ = ("_cache", "aliases", "entries", "unknown")

    def __init__(
        self, entries: dict[str, list[Entry]], unknown: dict[str, Capabilities], aliases: dict[str, str] | None = None
    ) -> None:
        self.entries = entries  # by provider type, in match order
        self.unknown = unknown  # by provider type
        self.aliases = aliases or {}  # provider types whose models are another type's (responses -> openai)
        self._cache: dict[tuple[str, str], Capabilities] = {}

    def section(self, provider_type: str) -> str:
        return self.aliases.get(provider_type, provider_type)

    def entry(self, provider_type: str, name: str) -> Entry | None:
        for e in self.entries.get(self.section(provider_type), ()):
            if e.name == name:
                return e
        return None

    def match(self, provider_type: str, model: str) -> Entry | None:
        """The first entry of ``provider_type`` matching ``model`` (or its last path segment, without ``ft:``)."""
        entries = self.entries.get(self.section(provider_type), ())
        for candidate in _candidates(model):
            for e in entries:
                if e.regex.match(candidate):
                    return e
        return None

    def lookup(self, provider_type: str, model: str) -> Capabilities:
        key = (provider_type, model)
        got = self._cache.get(key)
        if got is None:
            e = self.match(provider_type, model)
            got = e.caps if e is not None else self.unknown.get(self.section(provider_type), Capabilities())
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[key] = got
        return got

    def resolve(self, provider_type: str, model: str, override: dict[str, Any] | None) -> Capabilities:
        """What the gateway uses for ``model``: the catalog's, with a config override applied (``ValueError``)."""
        if not override:
            return self.lookup(provider_type, model)
        data = dict(override)
        like = data.pop("like", None)
        if like is not None:
            base_entry = self.entry(provider_type, like) if isinstance(like, str) else None
            if base_entry is None:
                names = ", ".join(e.name for e in self.entries.get(self.section(provider_type), ()))
                raise ValueError(f"'like': no {provider_type} catalog entry named {like!r} (entries: {names})")
            base = base_entry.caps
        else:
            base = self.lookup(provider_type, model)
        return caps_mod.parse(data, base, entry=f"{base.entry}+config", known=True)


# A cloud's decoration of a vendor's model name: Bedrock's ``[us.]anthropic.claude-...-v2:0`` (a region prefix, the
# vendor, a version suffix), Vertex's ``claude-...@20250929``.
_BEDROCK_ID = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen)\.(.+?)"
                         r"(?:-v\d+(?::\d+)?)?$")  # fmt: skip


def _candidates(model: str) -> tuple[str, ...]:
    out = [model]
    tail = model.rsplit("/", 1)[-1]
    if tail.startswith("ft:"):
        tail = tail[3:].split(":", 1)[0]
    if tail != model:
        out.append(tail)
    m = _BEDROCK_ID.match(tail)
    if m is not None:
        out.append(m.group(1))
    elif "@" in tail:
        out.append(tail.split("@", 1)[0])
    return tuple(out)


def parse_catalog(data: Any, where: str = str(PATH)) -> Catalog:
    """Check and build a catalog from the YAML document; ``CatalogError`` names the first fault."""
    if not isinstance(data, dict) or not isinstance(data.get("formats"), dict) or set(data) - {"formats", "aliases"}:
        raise CatalogError(f"{where}: expected 'formats' (a mapping of provider types) and optional 'aliases'")
    aliases = data.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(isinstance(v, str) and v in data["formats"] for v in aliases.values()):
        raise CatalogError(f"{where}: aliases: expected a mapping of provider types to sections in 'formats'")
    entries: dict[str, list[Entry]] = {}
    unknown: dict[str, Capabilities] = {}
    for ptype, section in data["formats"].items():
        at = f"{where}: formats.{ptype}"
        if not isinstance(section, dict) or not set(section) <= {"defaults", "unknown", "models"}:
            raise CatalogError(f"{at}: expected 'defaults', 'unknown' and 'models'")
        defaults = section.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise CatalogError(f"{at}.defaults: expected a mapping")
        try:
            unknown[ptype] = caps_mod.parse({**defaults, **(section.get("unknown") or {})}, Capabilities())
        except ValueError as exc:
            raise CatalogError(f"{at}.unknown: {exc}") from None
        out: list[Entry] = []
        seen: set[str] = set()
        for i, raw in enumerate(section.get("models") or []):
            if not isinstance(raw, dict):
                raise CatalogError(f"{at}.models[{i}]: expected a mapping")
            raw = dict(raw)
            name, patterns = raw.pop("name", None), raw.pop("match", None)
            if not isinstance(name, str) or not name or name in seen:
                raise CatalogError(f"{at}.models[{i}]: 'name' missing or duplicate")
            seen.add(name)
            if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise CatalogError(f"{at}.models[{i}] ({name}): 'match' must be a list of name patterns")
            try:
                caps = caps_mod.parse({**defaults, **raw}, Capabilities(), entry=name, known=True)
            except ValueError as exc:
                raise CatalogError(f"{at}.models[{i}] ({name}): {exc}") from None
            regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
            out.append(Entry(name, tuple(patterns), regex, caps))
        entries[ptype] = out
    return Catalog(entries, unknown, dict(aliases))


_CATALOG: Catalog | None = None


def catalog() -> Catalog:
    """The catalog shipped with the gateway, read once per process."""
    global _CATALOG
    if _CATALOG is None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        _CATALOG = parse_catalog(yaml.load(PATH.read_text(encoding="utf-8"), Loader=loader))
    return _CATALOG
