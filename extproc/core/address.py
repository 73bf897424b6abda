"""Listen and connect addresses: ``HOST:PORT``, ``:PORT`` or ``unix:PATH``, for the service and for Envoy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Address:
    """``HOST:PORT`` or ``unix:PATH``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str, default_host: str = "0.0.0.0") -> Address:
        if text.startswith("unix:"):
            return cls(path=text[5:])
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"address {text!r} must be HOST:PORT, :PORT or unix:PATH")
        host = host.strip("[]") or default_host
        return cls(host=host, port=int(port))

    def envoy(self) -> dict[str, Any]:
        if self.path:
            return {"pipe": {"path": self.path}}
        return {"socket_address": {"address": self.host, "port_value": self.port}}

    def grpc_target(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"
