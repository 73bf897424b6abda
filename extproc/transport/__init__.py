"""Transport: the gRPC server (``grpc_wire``, or grpc.aio), the ext_proc servicer (protobuf in and out), one worker
process (``server``) and the opt-in media download (``fetch``). The only I/O on the request path."""
