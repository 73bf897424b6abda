"""ai-gateway's external-processing service: Envoy does HTTP, this package translates LLM API formats."""

__version__ = "0.1.0"
