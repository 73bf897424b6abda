"""Core: what one request means to the gateway. The Envoy contract (header and metadata names), the config, access
(gateway keys, allow-lists), model listings, and the exchange (routing, then one response handler). Pure; imports
only ``translation``."""
