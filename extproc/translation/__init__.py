"""Translation: the canonical model, the wire formats (one module each, registered in ``formats``), SSE framing,
JSON Schema dialects and media planning. Pure functions over bytes and dataclasses: no I/O, no gRPC, and nothing
from the layers above (``core``, ``observability``, ``transport``, ``ops``)."""
