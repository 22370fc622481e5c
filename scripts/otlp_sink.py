"""A minimal OTLP/gRPC trace receiver for scripts/bench-telemetry.sh: accepts every export
without decoding it (so that the receiver, on the same machine, costs little) and prints how
many exports and bytes it got."""
import sys
import time
from concurrent import futures

import grpc

received = {"exports": 0, "bytes": 0}


def export(request: bytes, context) -> bytes:
    received["exports"] += 1
    received["bytes"] += len(request)
    # An empty ExportTraceServiceResponse encodes as no bytes.
    return b""


handler = grpc.method_handlers_generic_handler(
    "opentelemetry.proto.collector.trace.v1.TraceService",
    {"Export": grpc.unary_unary_rpc_method_handler(export)},
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(sys.argv[1])
server.start()
while True:
    time.sleep(5)
    print(f"exports received: {received['exports']} ({received['bytes']} bytes)", flush=True)
