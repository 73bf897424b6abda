"""The servicer's protobuf helpers: cached header mutations stay exact and bounded."""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from extproc.transport import servicer


def _decoded(blob_parts: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    mut = pb.HeaderMutation()
    servicer._mutation(mut, blob_parts, ["x-gone"])
    assert list(mut.remove_headers) == ["x-gone"]
    return [(h.header.key, h.header.raw_value) for h in mut.set_headers]


def test_header_mutations_from_cached_blobs_are_exact() -> None:
    headers = [(":path", "/v1/messages"), ("content-length", "123"), ("x-api-key", "sk-ant-ünicode-ok")]
    assert _decoded(headers) == [(k, v.encode("latin-1")) for k, v in headers]
    assert _decoded(headers) == _decoded(headers)  # the second time from the cache, the same


def test_long_header_values_are_never_kept() -> None:
    servicer._BLOBS.clear()
    long_path = "/v1/chat/completions?" + "q=" + "x" * 5000
    assert _decoded([(":path", long_path)]) == [(":path", long_path.encode())]
    assert servicer._BLOBS == {}
    for i in range(5000):  # bounded by count as well
        servicer._header_blob("content-length", str(i))
    assert 0 < len(servicer._BLOBS) <= 4096


def test_hand_encoded_header_mutation_is_protobufs_own() -> None:
    from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption

    for key, value in [("x-a", ""), ("content-length", "123"), ("x-long", "v" * 300), (":path", "/p?" + "q" * 20000),
                       ("x-ai-gateway-budget-remaining-usd", "12.345678"), ("x-latin", "caf\xe9")]:  # fmt: skip
        mut = pb.HeaderMutation()
        mut.set_headers.append(
            HeaderValueOption(
                header=HeaderValue(key=key, raw_value=value.encode("latin-1")),
                append_action=HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
        assert servicer._one_header(key, value) == mut.SerializeToString()
