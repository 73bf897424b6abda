"""The wire formats the gateway speaks, in one place. Everything else asks here, never compares format names."""

from __future__ import annotations

from types import ModuleType

from extproc.translation.formats import anthropic, gemini, openai

FORMATS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "gemini": gemini}


def provider_format(provider_type: str) -> ModuleType:
    """The format a provider of ``provider_type`` speaks."""
    return FORMATS[provider_type]
