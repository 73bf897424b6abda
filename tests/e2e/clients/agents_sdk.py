"""The OpenAI Agents SDK as its users run it: the default model class (``OpenAIResponsesModel``, the Responses API)
for ``Runner.run``, ``Runner.run_streamed``, a function tool and a structured ``output_type``.

``python -m tests.e2e.clients.agents_sdk <base_url> <api_key> <model>`` prints one JSON object of results (a fresh
process each time: the SDK keeps its default client in module globals).
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


async def run_all(base_url: str, api_key: str, model: str) -> dict[str, Any]:
    from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    set_default_openai_client(AsyncOpenAI(base_url=base_url, api_key=api_key), use_for_tracing=False)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    out: dict[str, Any] = {}

    async def scenario(name: str, coro: Any) -> None:
        try:
            out[name] = await coro
        except Exception as exc:  # the test reports which scenario failed and how
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}

    async def plain() -> dict[str, Any]:
        r = await Runner.run(Agent(name="plain", instructions="Be brief.", model=model), "Hello from the Agents SDK")
        return {"text": r.final_output}

    async def streamed() -> dict[str, Any]:
        r = Runner.run_streamed(Agent(name="streamed", model=model), "Stream from the Agents SDK")
        kinds: list[str] = []
        async for ev in r.stream_events():
            if ev.type == "raw_response_event":
                kinds.append(ev.data.type)
        return {"text": r.final_output, "events": sorted(set(kinds))}

    async def tools() -> dict[str, Any]:
        agent = Agent(name="tools", model=model, tools=[get_weather])
        r = await Runner.run(agent, "What is the weather in Paris?")
        return {"text": r.final_output, "calls": list(calls)}

    async def structured() -> dict[str, Any]:
        agent = Agent(name="structured", model=model, output_type=Weather)
        r = await Runner.run(agent, "Weather as JSON, please")
        return {"object": r.final_output.model_dump()}

    async def follow_up() -> dict[str, Any]:
        agent = Agent(name="follow", model=model)
        first = await Runner.run(agent, "Remember the word sesame")
        second = await Runner.run(agent, "Which word?", previous_response_id=first.last_response_id)
        return {"first": first.last_response_id, "text": second.final_output}

    await scenario("run", plain())
    await scenario("run_streamed", streamed())
    await scenario("function_tool", tools())
    await scenario("output_type", structured())
    await scenario("previous_response_id", follow_up())
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run_all(*sys.argv[1:4]))))
