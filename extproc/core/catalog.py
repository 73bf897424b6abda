"""The models the gateway lists, from the config (pure). Each format's ``list_models`` gives them its own shape.

``GET /openai/v1/models[/{id}]``, ``GET /anthropic/v1/models[/{id}]`` and ``GET /gemini/{v1,v1beta}/models[/{name}]``
list the configured model names (aliases included: they are what clients ask for), so each official SDK's
``models.list()`` / ``models.retrieve()`` / ``models.get()`` parses the answer. Unknown names that
``default_provider`` would forward are not listed: the gateway cannot know them. Limits, thinking and the release
time come from the model's capabilities (``extproc.core.models``) where the catalog knows them; each format prints
those its listing has fields for (Gemini ``inputTokenLimit``/``outputTokenLimit``/``thinking``, Anthropic
``max_input_tokens``/``max_tokens``, OpenAI ``created``).
"""

from __future__ import annotations

from extproc.core import models
from extproc.core.config import Config
from extproc.translation.formats import registry
from extproc.translation.formats.contract import ModelInfo


def model_infos(cfg: Config) -> list[ModelInfo]:
    """Every configured model, in config order."""
    out = []
    for m in cfg.models.values():
        provider = cfg.providers[m.provider]
        caps = m.capabilities
        if caps is None:  # the catalog switched off for it: what the config alone says
            caps = models.catalog().lookup(provider.family(m.target_model), m.target_model)
        out.append(
            ModelInfo(
                name=m.name,
                provider=m.provider,
                target_model=m.target_model,
                description=m.description,
                can_count=registry.provider(provider.format).COUNTS_TOKENS,
                created=caps.released,
                max_input_tokens=caps.context_window,
                max_output_tokens=caps.max_output_tokens,
                thinking=caps.thinks if caps.known else None,
            )
        )
    return out
