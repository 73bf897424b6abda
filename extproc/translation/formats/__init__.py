"""Wire formats, one module each (``openai``, ``anthropic``, ``gemini``), listed in ``registry``.

Each module is pure (bytes and dicts in, bytes and canonical dataclasses out; no gRPC, no I/O, no globals that change)
and implements ``contract.WireFormat`` in both directions, client side and provider side, so the gateway can pair any
client format with any provider format through the canonical model. ``contract`` documents every member; adding a
format is one module plus one line in ``registry.FORMATS`` (docs/architecture.md has the recipe).
"""
