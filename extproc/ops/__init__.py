"""Operations: the command line, the launcher that supervises workers and Envoy, and the Envoy bootstrap renderer."""
