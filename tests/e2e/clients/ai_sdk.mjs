// The Vercel AI SDK as its users call it: `openai(model)` (the Responses API) for generateText, streamText, a tool
// loop and generateObject. Usage: node ai_sdk.mjs <baseURL> <apiKey> <model>; prints one JSON object of results.
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const [baseURL, apiKey, model] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const out = {};

async function scenario(name, fn) {
  try {
    out[name] = await fn();
  } catch (err) {
    out[name] = { error: String(err && err.message ? err.message : err), status: err && err.statusCode };
  }
}

await scenario("generateText", async () => {
  const r = await generateText({ model: openai(model), prompt: "Hello from the AI SDK" });
  return { text: r.text, finishReason: r.finishReason, usage: r.usage };
});

await scenario("streamText", async () => {
  const r = streamText({ model: openai(model), prompt: "Stream from the AI SDK" });
  let text = "";
  for await (const piece of r.textStream) text += piece;
  return { text, finishReason: await r.finishReason, usage: await r.usage };
});

await scenario("toolLoop", async () => {
  const calls = [];
  const r = await generateText({
    model: openai(model),
    prompt: "What is the weather in Paris?",
    tools: {
      get_weather: tool({
        description: "Weather for a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return `sunny in ${city}`;
        },
      }),
    },
    stopWhen: stepCountIs(3),
  });
  return { text: r.text, steps: r.steps.length, calls, finishReason: r.finishReason };
});

await scenario("streamToolLoop", async () => {
  const calls = [];
  const r = streamText({
    model: openai(model),
    prompt: "What is the weather in Tokyo?",
    tools: {
      get_weather: tool({
        description: "Weather for a city",
        inputSchema: z.object({ city: z.string() }),
        execute: async ({ city }) => {
          calls.push(city);
          return `rainy in ${city}`;
        },
      }),
    },
    stopWhen: stepCountIs(3),
  });
  let text = "";
  for await (const piece of r.textStream) text += piece;
  return { text, steps: (await r.steps).length, calls };
});

await scenario("generateObject", async () => {
  const r = await generateObject({
    model: openai(model),
    schema: z.object({ city: z.string(), temperature: z.number() }),
    prompt: "Give me a city and a temperature",
  });
  return { object: r.object, finishReason: r.finishReason };
});

process.stdout.write(JSON.stringify(out) + "\n");
