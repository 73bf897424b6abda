"""The contract between Envoy and the service: the names both sides use, and nothing else.

The service sets these request headers and dynamic metadata; the Envoy bootstrap (``extproc.ops.envoy_config``) and
the Istio/Kubernetes manifests route, rate-limit and log on them. Whoever plugs the service into an existing Envoy
configures exactly these names.
"""

# The provider a request goes to: the only header Envoy routes on (always overwritten: a client may send one).
ROUTE_HEADER = "x-ai-gateway-provider"
# What Envoy's local rate limit counts: the gateway key's name and the client's model (set by the service).
RATE_KEY_HEADER = "x-ai-gateway-key"
RATE_MODEL_HEADER = "x-ai-gateway-model"
# Set by Envoy's local-reply mappers on replies Envoy made itself (connect failure, timeout), so the service can tell
# them from a provider's own 502/504 and answer in the client's format with the right error type.
LOCAL_ERROR_HEADER = "x-ai-gateway-error"
# Its value when Envoy had no key to inject for the provider (the credential injector's own 401).
NO_CREDENTIAL = "credential"
# Dynamic metadata namespace (model, provider, tokens, error type) read by Envoy's access log.
METADATA_NAMESPACE = "ai_gateway"
