"""Compiles the project's castore and build .proto files with grpc_tools (python3-grpc-tools) into a temporary directory and
imports the generated modules. Fails loudly when the Debian packages are missing: run scripts/setup."""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

try:
    import grpc  # noqa: F401  (python3-grpcio)
    from grpc_tools import protoc  # python3-grpc-tools
except ImportError as e:  # pragma: no cover - environment problem, reported to the test
    sys.stderr.write(f"interop: {e}; install python3-grpcio and python3-grpc-tools (scripts/setup)\n")
    sys.exit(3)

PROTO_ROOT = os.environ.get(
    "TFB_PROTO_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto"))


def _compile():
    out = tempfile.mkdtemp(prefix="tfb-interop-protos-")
    atexit.register(shutil.rmtree, out, True)
    files = []
    for package in ("tvix", "snix"):
        for service in ("castore", "build"):
            directory = os.path.join(PROTO_ROOT, package, service, "protos")
            files += [os.path.join(directory, f) for f in sorted(os.listdir(directory)) if f.endswith(".proto")]
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        sys.stderr.write(f"interop: protoc failed on {files}\n")
        sys.exit(3)
    sys.path.insert(0, out)


_compile()


class Castore:
    """The generated modules of one package: tvix.castore.v1 or snix.castore.v1."""

    def __init__(self, package):
        prefix = f"{package}.castore.protos."
        self.package = f"{package}.castore.v1"
        self.castore = importlib.import_module(prefix + "castore_pb2")
        self.blobs = importlib.import_module(prefix + "rpc_blobstore_pb2")
        self.blobs_grpc = importlib.import_module(prefix + "rpc_blobstore_pb2_grpc")
        self.directories = importlib.import_module(prefix + "rpc_directory_pb2")
        self.directories_grpc = importlib.import_module(prefix + "rpc_directory_pb2_grpc")
        build = f"{package}.build.protos."
        self.build = importlib.import_module(build + "build_pb2")
        self.build_grpc = importlib.import_module(build + "rpc_build_pb2_grpc")
