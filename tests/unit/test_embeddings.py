"""Embeddings in every format, pure: recorded real OpenAI embeddings answers (floats, base64, dimensions, a
multilingual batch, its errors), the clients' requests (OpenAI, Gemini embedContent / batchEmbedContents), and what
each provider gets (Azure, Vertex predict, Bedrock Titan and Cohere) and answers."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest
import yaml

from extproc.translation import canonical as c
from extproc.translation.errors import GatewayError
from extproc.translation.formats import anthropic, azure, bedrock, gemini, openai, vertex
from extproc.translation.formats.contract import EMBED
from tests.paths import ROOT

CASSETTES = ROOT / "tests" / "fixtures" / "recorded" / "envoy-ai-gateway" / "cassettes"


def _recorded(name: str) -> dict:
    return yaml.safe_load((CASSETTES / f"{name}.yaml").read_text())["interactions"][0]


def _floats32(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# --------------------------------------------------------------------------------------------------- recorded OpenAI
@pytest.mark.parametrize(("name", "inputs", "dims"), [("embeddings-basic", 1, 1536), ("embeddings-base64", 1, 1536),
                                                       ("embeddings-dimensions", 1, 256),
                                                       ("embeddings-mixed-batch", None, 1536)])  # fmt: skip
def test_recorded_openai_answers(name: str, inputs: int | None, dims: int) -> None:
    got = _recorded(name)
    sent = orjson.loads(got["request"]["body"])
    req = openai.parse_embed_request(sent, model="m")
    assert req.inputs == ([sent["input"]] if isinstance(sent["input"], str) else sent["input"])
    assert req.dimensions == sent.get("dimensions") and req.encoding == sent.get("encoding_format", "float")
    body = got["response"]["body"].encode()
    resp = openai.parse_embed_response(body)
    assert len(resp.vectors) == len(req.inputs) and all(len(v) == dims for v in resp.vectors)
    data = orjson.loads(body)
    first = data["data"][0]["embedding"]
    want = _floats32(first) if isinstance(first, str) else first
    assert resp.vectors[0] == pytest.approx(want)
    assert resp.usage == c.Usage(data["usage"]["prompt_tokens"])
    # the client asked for base64 (the SDK's default): the gateway's own encoding reads back as the same float32s
    out = orjson.loads(openai.build_embed_response(resp, model="alias", request=req))
    if req.encoding == "base64":
        assert _floats32(out["data"][0]["embedding"]) == pytest.approx(want)
    assert out["model"] == "alias" and out["usage"]["prompt_tokens"] == data["usage"]["prompt_tokens"]


def test_recorded_openai_errors() -> None:
    err = openai.parse_error(404, _recorded("embeddings-unknown-model")["response"]["body"].encode())
    assert (err.type, err.status, err.code) == ("unknown_model", 404, "model_not_found")
    bad = _recorded("embeddings-bad-request")
    err = openai.parse_error(400, bad["response"]["body"].encode())
    assert (err.type, err.message) == ("invalid_request", "-1 is less than the minimum of 1 - 'dimensions'")
    with pytest.raises(GatewayError):  # the gateway refuses the same request before sending it anywhere
        openai.parse_embed_request(orjson.loads(bad["request"]["body"]), model="m")


# ------------------------------------------------------------------------------------------------------- clients
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"input": ""}, "empty strings"),
        ({"input": []}, "non-empty"),
        ({"input": [1, 2]}, "token-id inputs"),
        ({"input": "x", "dimensions": 0}, "positive integer"),
        ({"input": "x", "encoding_format": "int8"}, "'float' or 'base64'"),
    ],
)
def test_openai_client_refusals(body: dict, words: str) -> None:
    with pytest.raises(GatewayError, match=words):
        openai.parse_embed_request(body, model="m")


def test_gemini_clients() -> None:
    one = gemini.parse_embed_request(
        {
            "content": {"parts": [{"text": "a"}, {"text": "b"}]},
            "taskType": "RETRIEVAL_QUERY",
            "outputDimensionality": 3,
        },
        model="m",
    )
    assert (one.inputs, one.task_type, one.dimensions, one.batch) == (["a b"], "RETRIEVAL_QUERY", 3, False)
    assert orjson.loads(gemini.build_embed_response(c.EmbedResponse([[1.0, 2.0]]), model="m", request=one)) == {
        "embedding": {"values": [1.0, 2.0]}
    }
    batch = gemini.parse_embed_request(
        {"requests": [{"model": "models/m", "content": {"parts": [{"text": t}]}, "title": "T",
                       "taskType": "RETRIEVAL_DOCUMENT"} for t in ("x", "y")]},
        model="m",
    )  # fmt: skip
    assert (batch.inputs, batch.title, batch.batch) == (["x", "y"], "T", True)
    out = orjson.loads(gemini.build_embed_response(c.EmbedResponse([[1.0], [2.0]]), model="m", request=batch))
    assert out == {"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}
    with pytest.raises(GatewayError, match="share"):
        gemini.parse_embed_request({"requests": [{"content": {"parts": [{"text": "x"}]}, "taskType": "CLUSTERING"},
                                                 {"content": {"parts": [{"text": "y"}]}}]}, model="m")  # fmt: skip
    with pytest.raises(GatewayError, match="only text"):
        gemini.parse_embed_request({"content": {"parts": [{"inlineData": {"data": "eA=="}}]}}, model="m")


def test_gemini_routes() -> None:
    ep = gemini.route("POST", "/gemini/v1beta/models/text-embedding-004:batchEmbedContents", "")
    assert ep is not None and ep.kind == EMBED and ep.model == "text-embedding-004"
    assert openai.route("POST", "/openai/v1/embeddings", "") is not None


# ----------------------------------------------------------------------------------------------------- providers
REQ = c.EmbedRequest("m", ["first text", "second"], dimensions=256, task_type="RETRIEVAL_QUERY", title=None)


def test_openai_and_azure_requests() -> None:
    body = orjson.loads(openai.build_embed_request(REQ, model="text-embedding-3-small"))
    assert body == {"model": "text-embedding-3-small", "input": ["first text", "second"], "encoding_format": "float",
                    "dimensions": 256}  # fmt: skip
    assert (
        azure.upstream_path(model="emb prod", stream=False, kind=EMBED) == "/openai/deployments/emb%20prod/embeddings"
    )
    assert orjson.loads(azure.build_embed_request(REQ, model="d")) == {**body, "model": "d"}


def test_gemini_provider() -> None:
    body = orjson.loads(gemini.build_embed_request(REQ, model="gemini-embedding-001"))
    assert body["requests"][1] == {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "second"}]},
                                   "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 256}  # fmt: skip
    assert gemini.upstream_path(model="g", stream=False, kind=EMBED) == "/v1beta/models/g:batchEmbedContents"
    resp = gemini.parse_embed_response(b'{"embeddings": [{"values": [0.5, 1]}, {"values": [2]}]}')
    assert resp.vectors == [[0.5, 1.0], [2.0]]


def test_vertex_predict() -> None:
    body = orjson.loads(vertex.build_embed_request(REQ, model="text-embedding-005"))
    assert body == {"instances": [{"content": "first text", "task_type": "RETRIEVAL_QUERY"},
                                  {"content": "second", "task_type": "RETRIEVAL_QUERY"}],
                    "parameters": {"outputDimensionality": 256}}  # fmt: skip
    answer = {"predictions": [{"embeddings": {"values": [0.25], "statistics": {"token_count": 2, "truncated": False}}},
                              {"embeddings": {"values": [0.5], "statistics": {"token_count": 1.0}}}],
              "metadata": {"billableCharacterCount": 16}}  # fmt: skip
    resp = vertex.parse_embed_response(orjson.dumps(answer))
    assert (resp.vectors, resp.usage) == ([[0.25], [0.5]], c.Usage(3))
    assert vertex.upstream_path(model="t", stream=False, kind=EMBED) == "/publishers/google/models/t:predict"


def test_bedrock_titan_and_cohere() -> None:
    one = c.EmbedRequest("m", ["hello"], dimensions=512)
    assert orjson.loads(bedrock.build_embed_request(one, model="amazon.titan-embed-text-v2:0")) == {
        "inputText": "hello", "dimensions": 512, "normalize": True,
    }  # fmt: skip
    with pytest.raises(GatewayError, match="one text per request"):
        bedrock.build_embed_request(REQ, model="amazon.titan-embed-text-v2:0")
    cohere = orjson.loads(bedrock.build_embed_request(REQ, model="cohere.embed-v4:0"))
    assert cohere == {"texts": ["first text", "second"], "input_type": "search_query", "embedding_types": ["float"],
                      "output_dimension": 256}  # fmt: skip
    with pytest.raises(GatewayError, match="not an embeddings model"):
        bedrock.build_embed_request(REQ, model="amazon.nova-pro-v1:0")
    titan = bedrock.parse_embed_response(b'{"embedding": [0.1, 0.2], "inputTextTokenCount": 3}')
    assert (titan.vectors, titan.usage) == ([[0.1, 0.2]], c.Usage(3))
    by_type = bedrock.parse_embed_response(b'{"id": "x", "embeddings": {"float": [[1], [2]]}, "texts": ["a", "b"]}')
    floats = bedrock.parse_embed_response(
        b'{"id": "x", "embeddings": [[1], [2]], "response_type": "embeddings_floats"}'
    )
    assert by_type.vectors == floats.vectors == [[1.0], [2.0]]
    assert (
        bedrock.upstream_path(model="cohere.embed-v4:0", stream=False, kind=EMBED)
        == "/model/cohere.embed-v4%3A0/invoke"
    )


def test_formats_without_embeddings() -> None:
    assert not anthropic.EMBEDS
    with pytest.raises(GatewayError) as err:
        anthropic.build_embed_request(REQ, model="claude")
    assert err.value.status == 400


def test_broken_answers_are_502() -> None:
    for fmt, body in ((openai, b'{"data": [{"embedding": "!!"}]}'), (gemini, b'{"embeddings": [{"values": ["x"]}]}'),
                      (vertex, b'{"predictions": 3}'), (bedrock, b'{"embeddings": "no"}')):  # fmt: skip
        with pytest.raises(GatewayError) as err:
            fmt.parse_embed_response(body)
        assert err.value.status == 502
