"""A protoc plugin (for `buf generate`) that writes Python code with grpcio-tools from PyPI.

grpcio-tools bundles protoc with its Python, .pyi and gRPC generators but installs no
protoc-gen-* executables, so buf cannot call them directly. This plugin reads buf's
CodeGeneratorRequest, hands the request's descriptors to grpcio-tools' protoc
(--descriptor_set_in: nothing is parsed twice, no protoc from apt) and returns the files it
wrote (`*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`) in a CodeGeneratorResponse.

buf.gen.yaml runs it as `python3 plugins/grpcio_python.py` with the python3 that has
grpcio-tools installed (examples/python/requirements.txt).
"""

import os
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse()
    response.supported_features = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    with tempfile.TemporaryDirectory() as work:
        descriptors = os.path.join(work, "descriptors.binpb")
        with open(descriptors, "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        out = os.path.join(work, "out")
        os.mkdir(out)
        args = [
            "grpc_tools.protoc",
            f"--descriptor_set_in={descriptors}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *request.file_to_generate,
        ]
        # protoc prints its own errors to stderr, which buf shows.
        if protoc.main(args) != 0:
            response.error = "grpcio-tools' protoc failed (see above)"
        else:
            for root, _, names in os.walk(out):
                for name in sorted(names):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as f:
                        response.file.add(name=os.path.relpath(path, out), content=f.read())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
