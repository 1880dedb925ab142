#!/usr/bin/python3
"""An independent castore client (Python grpcio) calling our server.

usage: castore_client.py --target 127.0.0.1:PORT|unix:/path --package tvix|snix OPERATIONS.json

OPERATIONS.json is a list of operations; the results (one JSON object each, in order) are printed as a JSON list.
Every result has "code" (a grpc.StatusCode name) and "details"; the rest depends on the operation:
  {"op": "blob_put", "chunks_hex": [...]}                    -> digest_hex
  {"op": "blob_stat", "digest_hex": ..., "send_chunks": b}   -> chunks: [{digest_hex, size}]
  {"op": "blob_read", "digest_hex": ...}                     -> data_hex
  {"op": "dir_put", "encodings_hex": [...]}                  -> root_digest_hex
  {"op": "dir_get", "digest_hex": ..., "recursive": b}       -> encodings_hex
  {"op": "do_build", "request_hex": ..., "timeout": s}       -> response_hex, outputs: [[kind, name]]
  {"op": "unary", "path": "/pkg.Svc/M", "request_hex": "", "timeout": s, "cancel_after": s} -> response_hex
"""

import argparse
import json
import sys
import time

import grpc

from castore_protos import Castore


def run(op, pb, channel):
    kind = op["op"]
    blobs = pb.blobs_grpc.BlobServiceStub(channel)
    directories = pb.directories_grpc.DirectoryServiceStub(channel)
    timeout = op.get("timeout")
    if kind == "blob_put":
        chunks = (pb.blobs.BlobChunk(data=bytes.fromhex(c)) for c in op["chunks_hex"])
        return {"digest_hex": blobs.Put(chunks, timeout=timeout).digest.hex()}
    if kind == "blob_stat":
        response = blobs.Stat(pb.blobs.StatBlobRequest(
            digest=bytes.fromhex(op["digest_hex"]), send_chunks=op.get("send_chunks", False)), timeout=timeout)
        return {"chunks": [{"digest_hex": c.digest.hex(), "size": c.size} for c in response.chunks]}
    if kind == "blob_read":
        data = b"".join(c.data for c in blobs.Read(
            pb.blobs.ReadBlobRequest(digest=bytes.fromhex(op["digest_hex"])), timeout=timeout))
        return {"data_hex": data.hex()}
    if kind == "dir_put":
        stream = (pb.castore.Directory.FromString(bytes.fromhex(e)) for e in op["encodings_hex"])
        return {"root_digest_hex": directories.Put(stream, timeout=timeout).root_digest.hex()}
    if kind == "dir_get":
        request = pb.directories.GetDirectoryRequest(
            digest=bytes.fromhex(op["digest_hex"]), recursive=op.get("recursive", False))
        return {"encodings_hex": [d.SerializeToString().hex() for d in directories.Get(request, timeout=timeout)]}
    if kind == "do_build":
        # The generated stub and message types: the reply is decoded by Python's protobuf, not just passed on.
        request = pb.build.BuildRequest.FromString(bytes.fromhex(op["request_hex"]))
        reply = pb.build_grpc.BuildServiceStub(channel).DoBuild(request, timeout=timeout)
        outputs = reply.outputs if pb.package.startswith("tvix") else [o.output for o in reply.outputs]
        kinds = [[node.WhichOneof("node"), getattr(node, node.WhichOneof("node")).name.decode()] for node in outputs]
        return {"response_hex": reply.SerializeToString().hex(), "outputs": kinds}
    if kind == "unary":
        call = channel.unary_unary(op["path"])  # raw bytes in and out
        request = bytes.fromhex(op.get("request_hex", ""))
        if "cancel_after" in op:
            future = call.future(request, timeout=timeout)
            time.sleep(op["cancel_after"])
            future.cancel()
            return {"response_hex": future.result().hex()}
        return {"response_hex": call(request, timeout=timeout).hex()}
    raise ValueError(f"unknown operation {kind}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--package", choices=["tvix", "snix"], default="tvix")
    parser.add_argument("operations")
    args = parser.parse_args()
    with open(args.operations) as f:
        operations = json.load(f)

    pb = Castore(args.package)
    options = [("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 16 << 20)]
    results = []
    with grpc.insecure_channel(args.target, options=options) as channel:
        for op in operations:
            try:
                result = run(op, pb, channel)
                result.update(code="OK", details="")
            except grpc.FutureCancelledError:
                result = {"code": "CANCELLED", "details": "cancelled by the client"}
            except grpc.RpcError as e:
                result = {"code": e.code().name, "details": e.details() or ""}
            results.append(result)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
