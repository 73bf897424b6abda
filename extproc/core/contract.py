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

# ---- Models with several targets (docs/fallback.md): Envoy retries across them, each attempt translated for its own
# target by the ext_proc filter on the model's cluster (the "attempt" filter).
# ROUTE_HEADER value for such a model: its route retries across the targets (a provider name never has a "/").
MODEL_ROUTE_PREFIX = "model/"
# Set by Envoy on each attempt's request, from the endpoint's metadata: the target's provider (it selects that
# provider's credential injector on the cluster) and its label (the attempt log's entry). Removed by the cluster's
# last filter before the request leaves.
TARGET_HEADER = "x-ai-gateway-target"
TARGET_LABEL_HEADER = "x-ai-gateway-target-label"
# Set by the cluster's Lua filter on each attempt: "1" when it is the request's first attempt and goes to the target
# the request was built for (nothing to do: the attempt filter is skipped), else "0". Removed before it leaves.
PREPARED_HEADER = "x-ai-gateway-prepared"
# Answer headers Envoy adds on a fallback route: the answering target's provider/model and wire format (the service
# translates from it), the number of attempts, and the attempt log: "provider/model=status" per attempt, in order,
# ";"-separated, status empty when nothing came back (written by the cluster's Lua filter into dynamic metadata
# ATTEMPT_LOG_KEY). The client gets them too.
SERVED_BY_HEADER = "x-ai-gateway-served-by"
SERVED_FORMAT_HEADER = "x-ai-gateway-served-format"
ATTEMPTS_HEADER = "x-ai-gateway-attempts"
ATTEMPT_LOG_HEADER = "x-ai-gateway-attempt-log"
ATTEMPT_LOG_KEY = "attempt_log"
# Governance: a key's own remaining budget on its answers. The service puts the values into dynamic metadata with its
# request-body answer (as of the check); Envoy's virtual host adds the headers from them (rendered when some rule
# gives a key a budget of its own), so no answer of the response's own phase has to change.
BUDGET_HEADER = "x-ai-gateway-budget-remaining-usd"
BUDGET_RESET_HEADER = "x-ai-gateway-budget-reset"
BUDGET_KEY = "budget_remaining_usd"
BUDGET_RESET_KEY = "budget_reset"
# An attempt answered 429 is shown to Envoy as a 503 (its outlier detection counts 5xx only, and cools the target
# down) by the cluster's Lua filter; the provider's own status travels here, and the service restores it.
UPSTREAM_STATUS_HEADER = "x-ai-gateway-upstream-status"
# LOCAL_ERROR_HEADER value on an attempt's own error reply: its body is already in the client's format.
ATTEMPT_REPLY = "attempt"
# Dynamic metadata (METADATA_NAMESPACE) the service sets when it sends a request to a fallback route, for its
# attempts: the context (JSON: the client's path and query, its own format headers, the target the request was built
# for and that target's header changes), that target's label again (for Envoy's attribute expressions), and the
# client's body when the body sent is not the client's.
ATTEMPT_CONTEXT_KEY = "attempt_context"
PREPARED_KEY = "prepared"
CLIENT_BODY_KEY = "client_body"
# Dynamic metadata an attempt that replaced the body sets for its own request: the new body's length (Envoy drops
# content-length when an ext_proc filter replaces a body at the headers; the cluster's last filter puts it back).
CONTENT_LENGTH_KEY = "content_length"
# Endpoint metadata (METADATA_NAMESPACE) of each target in a fallback cluster: "provider/model", the provider, its
# wire format, and what the attempt needs (JSON: [provider, provider type, its API, path prefix, model]).
HOST_TARGET_KEY = "target"
HOST_PROVIDER_KEY = "provider"
HOST_FORMAT_KEY = "format"
HOST_ATTEMPT_KEY = "attempt"
_NS = METADATA_NAMESPACE
_HOST = f"xds.upstream_host_metadata.filter_metadata['{_NS}']"
_META = f"metadata.filter_metadata['{_NS}']"
# What the attempt filter asks Envoy for with the request headers (CEL attributes): the endpoint's target, the
# request's context, and the client's body unless this attempt goes to the target the request was built for.
ATTEMPT_ATTRIBUTES = (
    f"{_HOST}['{HOST_ATTEMPT_KEY}']",
    f"{_META}['{ATTEMPT_CONTEXT_KEY}']",
    f"{_HOST}['{HOST_TARGET_KEY}'] != {_META}['{PREPARED_KEY}'] && '{CLIENT_BODY_KEY}' in {_META} "
    f"? {_META}['{CLIENT_BODY_KEY}'] : ''",
)
