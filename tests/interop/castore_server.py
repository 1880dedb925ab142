#!/usr/bin/python3
"""An independent castore server (Python grpcio) feeding fixture data to our client.

usage: castore_server.py --listen 127.0.0.1:0|unix:/path --package tvix|snix --fixture FILE [behaviour options]

The fixture is JSON: {"blobs": {digest_hex: data_hex}, "chunks": {blob_digest_hex: [chunk_digest_hex, ...]},
"directories": [encoding_hex, ...]}. Directories are looked up by the BLAKE3 digest the test computed (given as
"directory_digests": [digest_hex, ...] in the same order), so this server needs no BLAKE3 of its own.

Prints "LISTENING <port>" (or "LISTENING unix:/path") once serving, and exits when stdin closes.
Besides the castore services it serves /interop.Control/Stats (raw bytes): a JSON object counting the requests
per method and digest.
"""

import argparse
import collections
import json
import sys
import threading
import time
from concurrent import futures

import grpc

from castore_protos import Castore


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--package", choices=["tvix", "snix"], default="tvix")
    parser.add_argument("--fixture", required=True)
    parser.add_argument("--corrupt", action="store_true", help="flip a byte of every blob read; answer Get with the wrong directory")
    parser.add_argument("--slow", type=float, default=0.0, help="sleep this many seconds before answering")
    parser.add_argument("--fail-stat", help="CODE:MESSAGE: answer every Stat with this status")
    parser.add_argument("--abort-read-after", type=int, default=-1, help="abort Read with DATA_LOSS after N messages")
    parser.add_argument("--read-message-size", type=int, default=1000, help="bytes per BlobChunk message")
    parser.add_argument("--tls", nargs=2, metavar=("CERT_PEM", "KEY_PEM"), help="serve over TLS (h2 via ALPN)")
    parser.add_argument("--client-ca", help="with --tls: require a client certificate issued by this CA (PEM)")
    parser.add_argument("--token", help="refuse calls without 'authorization: Bearer TOKEN' (UNAUTHENTICATED)")
    parser.add_argument("--health", choices=["SERVING", "NOT_SERVING"],
                        help="offer grpc.health.v1.Health/Check answering this status (raw bytes: no grpc_health module needed)")
    args = parser.parse_args()

    with open(args.fixture) as f:
        fixture = json.load(f)
    blobs = {bytes.fromhex(k): bytes.fromhex(v) for k, v in fixture.get("blobs", {}).items()}
    chunks = {bytes.fromhex(k): [bytes.fromhex(c) for c in v] for k, v in fixture.get("chunks", {}).items()}
    encodings = [bytes.fromhex(e) for e in fixture.get("directories", [])]
    digests = [bytes.fromhex(d) for d in fixture.get("directory_digests", [])]

    pb = Castore(args.package)
    directories = {}
    for digest, encoding in zip(digests, encodings):
        directories[digest] = pb.castore.Directory.FromString(encoding)

    stats = collections.defaultdict(collections.Counter)
    lock = threading.Lock()

    def count(method, digest):
        with lock:
            stats[method][digest.hex()] += 1

    def slow(context):
        deadline = time.monotonic() + args.slow
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)

    class BlobService(pb.blobs_grpc.BlobServiceServicer):
        def Stat(self, request, context):
            count("stat", request.digest)
            slow(context)
            if args.fail_stat:
                code, message = args.fail_stat.split(":", 1)
                context.abort(getattr(grpc.StatusCode, code), message)
            if request.digest not in blobs:
                context.abort(grpc.StatusCode.NOT_FOUND, "blob not found")
            response = pb.blobs.StatBlobResponse()
            if request.send_chunks:
                for c in chunks.get(request.digest, []):
                    response.chunks.add(digest=c, size=len(blobs[c]))
            return response

        def Read(self, request, context):
            count("read", request.digest)
            slow(context)
            if request.digest not in blobs:
                context.abort(grpc.StatusCode.NOT_FOUND, "blob not found")
            data = blobs[request.digest]
            if args.corrupt and data:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            size = max(1, args.read_message_size)
            for i, start in enumerate(range(0, len(data), size)):
                if i == args.abort_read_after:
                    context.abort(grpc.StatusCode.DATA_LOSS, "disk on fire: 100% gone")
                yield pb.blobs.BlobChunk(data=data[start:start + size])

        def Put(self, request_iterator, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fixture server is read-only")

    class DirectoryService(pb.directories_grpc.DirectoryServiceServicer):
        def Get(self, request, context):
            count("get", request.digest)
            slow(context)
            if request.digest not in directories:
                context.abort(grpc.StatusCode.NOT_FOUND, "directory not found")
            if args.corrupt:
                # A valid directory, but not the one asked for.
                others = [d for k, d in directories.items() if k != request.digest]
                yield others[0] if others else pb.castore.Directory()
                return
            if not request.recursive:
                yield directories[request.digest]
                return
            queue, seen = [request.digest], {request.digest}
            while queue:
                directory = directories.get(queue.pop(0))
                if directory is None:
                    context.abort(grpc.StatusCode.NOT_FOUND, "a child directory is missing")
                yield directory
                for child in directory.directories:
                    if child.digest not in seen:
                        seen.add(child.digest)
                        queue.append(child.digest)

        def Put(self, request_iterator, context):
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fixture server is read-only")

    def control_stats(request, context):
        with lock:
            return json.dumps({k: dict(v) for k, v in stats.items()}).encode()

    control = grpc.method_handlers_generic_handler(
        "interop.Control", {"Stats": grpc.unary_unary_rpc_method_handler(control_stats)})

    handlers = [control]
    if args.health:
        # HealthCheckResponse{status = 1 SERVING | 2 NOT_SERVING}, encoded by hand.
        answer = bytes([0x08, 1 if args.health == "SERVING" else 2])

        def health_check(request, context):
            count("health", b"")
            return answer

        handlers.append(grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health_check)}))

    interceptors = []
    if args.token:
        expected = "Bearer " + args.token

        class TokenCheck(grpc.ServerInterceptor):
            def intercept_service(self, continuation, details):
                if details.method.startswith("/interop.Control/"):
                    return continuation(details)
                sent = dict(details.invocation_metadata).get("authorization")
                if sent == expected:
                    with lock:
                        stats["authorized"][details.method] += 1
                    return continuation(details)

                def refuse(request, context):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token" if sent else "no bearer token")

                handler = continuation(details)
                if handler is not None and handler.request_streaming:
                    return grpc.stream_unary_rpc_method_handler(lambda it, ctx: refuse(None, ctx))
                if handler is not None and handler.response_streaming:
                    return grpc.unary_stream_rpc_method_handler(lambda r, ctx: refuse(r, ctx))
                return grpc.unary_unary_rpc_method_handler(refuse)

        interceptors.append(TokenCheck())

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=handlers, interceptors=interceptors)
    pb.blobs_grpc.add_BlobServiceServicer_to_server(BlobService(), server)
    pb.directories_grpc.add_DirectoryServiceServicer_to_server(DirectoryService(), server)
    if args.tls:
        with open(args.tls[0], "rb") as cert, open(args.tls[1], "rb") as key:
            pair = [(key.read(), cert.read())]
        if args.client_ca:
            with open(args.client_ca, "rb") as ca:
                credentials = grpc.ssl_server_credentials(pair, root_certificates=ca.read(), require_client_auth=True)
        else:
            credentials = grpc.ssl_server_credentials(pair)
        port = server.add_secure_port(args.listen, credentials)
    else:
        port = server.add_insecure_port(args.listen)
    if port == 0:
        sys.stderr.write(f"interop: cannot listen on {args.listen}\n")
        sys.exit(2)
    server.start()
    print(f"LISTENING {args.listen if args.listen.startswith('unix:') else port}", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)
    server.stop(0).wait()


if __name__ == "__main__":
    main()
