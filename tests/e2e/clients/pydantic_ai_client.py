"""pydantic-ai's ``OpenAIResponsesModel`` as its users run it: ``run``, ``run_stream``, a tool and a native
(JSON schema) ``output_type``.

``python -m tests.e2e.clients.pydantic_ai_client <base_url> <api_key> <model>`` prints one JSON object of results.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pydantic


class Weather(pydantic.BaseModel):
    city: str
    temperature: float


async def run_all(base_url: str, api_key: str, model_name: str) -> dict[str, Any]:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel(model_name, provider=OpenAIProvider(base_url=base_url, api_key=api_key))
    out: dict[str, Any] = {}
    calls: list[str] = []

    async def scenario(name: str, coro: Any) -> None:
        try:
            out[name] = await coro
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}

    async def plain() -> dict[str, Any]:
        r = await Agent(model, instructions="Be brief.").run("Hello from pydantic-ai")
        return {"text": r.output}

    async def streamed() -> dict[str, Any]:
        async with Agent(model).run_stream("Stream from pydantic-ai") as r:
            text = await r.get_output()
        return {"text": text}

    async def tools() -> dict[str, Any]:
        agent = Agent(model)

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The weather for a city."""
            calls.append(city)
            return f"sunny in {city}"

        r = await agent.run("What is the weather in Paris?")
        return {"text": r.output, "calls": list(calls)}

    async def structured() -> dict[str, Any]:
        r = await Agent(model, output_type=NativeOutput(Weather)).run("Weather as JSON, please")
        return {"object": r.output.model_dump()}

    await scenario("run", plain())
    await scenario("run_stream", streamed())
    await scenario("tool", tools())
    await scenario("output_type", structured())
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run_all(*sys.argv[1:4]))))
