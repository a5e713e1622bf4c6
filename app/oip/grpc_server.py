"""Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), one listener per worker.

Each gunicorn worker starts a grpcio server after fork (app.runtime.hooks), bound to
GRPC_BIND with SO_REUSEPORT, so the kernel spreads connections over the workers and each
request runs in the worker that owns the model copy, through the same batcher as HTTP.
Nothing of grpc is created before fork: grpcio can't survive a fork with live channels or
servers. nginx proxies the public :8001 (HTTP/2) to this loopback port.

A thin adapter around app.core.guard, like the HTTP doors: every RPC starts a call, has its
key checked for its operation (from `authorization: Bearer` or `x-api-key` metadata) before
its message is even decoded, and is counted and logged by the gate. Methods are registered
with raw-bytes deserialisers, so a message that doesn't decode is our INVALID_ARGUMENT, not
grpcio's INTERNAL. Domain errors map to status codes in `CODES`, the one table of this edge.
"""

from __future__ import annotations

import logging
from concurrent import futures
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from app.core.errors import ServiceError, invalid
from app.core.guard import Call, Gate, Operation, presented_key
from app.oip.dataplane import OIP
from app.oip.grpc_codec import encode_grpc, parse_grpc
from app.oip.grpc_proto import CODES, SC, SERVICE, metadata_of, pb
from app.oip.grpc_stream import Streams

logger = logging.getLogger(__name__)
__all__ = ["SERVICE", "Servicer", "pb", "start"]  # tests and clients import the messages from here


@dataclass
class Outcome:
    """What the gate made of one request: the response, or the code and message refusing it."""

    request_id: str
    code: grpc.StatusCode = SC.UNKNOWN  # until an answer or a mapped error says otherwise
    message: str = ""
    retry_after: int | None = None
    request: object | None = None  # the decoded message, once it decoded
    response: object | None = None


class Servicer:
    """Each RPC: (request message, operation, answer(request, call) -> response message)."""

    def __init__(self, api: OIP, gate: Gate, max_streams: int = 1):
        self.api, self.gate = api, gate
        clf = api.clf
        self.streams = Streams(self, max_streams)
        self.rpcs = {
            "ServerLive": (pb.ServerLiveRequest, Operation.PROBE, lambda r, c: pb.ServerLiveResponse(live=True)),
            "ServerReady": (
                pb.ServerReadyRequest,
                Operation.PROBE,
                lambda r, c: pb.ServerReadyResponse(ready=clf.ready),
            ),
            "ModelReady": (pb.ModelReadyRequest, Operation.PROBE, self._model_ready),
            "ServerMetadata": (
                pb.ServerMetadataRequest,
                Operation.DESCRIBE,
                lambda r, c: pb.ServerMetadataResponse(**api.server_metadata()),
            ),
            "ModelMetadata": (pb.ModelMetadataRequest, Operation.DESCRIBE, self._model_metadata),
            "ModelConfig": (pb.ModelConfigRequest, Operation.DESCRIBE, self._model_config),
            "ModelInfer": (pb.ModelInferRequest, Operation.PREDICT, self.infer),
        }

    def _model_ready(self, request, call: Call):
        self.api.model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.api.clf.ready)

    def _model_metadata(self, request, call: Call):
        return pb.ModelMetadataResponse(**self.api.model(request.name, request.version).metadata())

    def _model_config(self, request, call: Call):
        return pb.ModelConfigResponse(config=pb.ModelConfig(**self.api.model(request.name, request.version).config()))

    def infer(self, request, call: Call):
        """One ModelInferRequest, unary or on a stream."""
        model = self.api.model(request.model_name, request.model_version)
        with self.gate.serving(call) as stats:
            parsed = parse_grpc(request)
            outputs = model.infer(parsed, stats)
        return encode_grpc(pb.ModelInferResponse(), parsed, model.name, model.version, outputs)

    @staticmethod
    def decode(message, raw: bytes):
        try:
            return message.FromString(raw)
        except DecodeError:
            raise invalid(f"the {message.DESCRIPTOR.name} message does not decode") from None

    def run(self, endpoint: str, metadata: dict, raw: bytes, rpc: tuple, started=None, decoded=None) -> Outcome:
        """One request through the gate, whatever carries it (a unary RPC, a stream's message):
        begin, the key for its operation (None: checked already, for the whole stream) before
        the message is decoded (unless the caller has, `decoded`), the answer, every error
        mapped by CODES, and end."""
        message, op, answer = rpc
        call = self.gate.begin(
            endpoint, endpoint, "POST", metadata.get("x-request-id"), metadata.get("x-real-ip"), len(raw)
        )
        out = Outcome(call.request_id)
        try:
            if started is not None:
                started(call)
            if op is not None:
                self.gate.authorize(op, presented_key(metadata.get))
            out.request = decoded if decoded is not None else self.decode(message, raw)
            out.response, out.code = answer(out.request, call), SC.OK
        except ServiceError as exc:
            out.code, out.message, out.retry_after = CODES[exc.kind], exc.message, exc.retry_after
        except Exception:
            out.code, out.message = SC.INTERNAL, f"internal server error; request id {call.request_id}"
            logger.exception("unhandled error in gRPC %s, request %s", endpoint, call.request_id)
        finally:
            self.gate.end(call, out.code.name)
        return out

    def serve(self, method: str, raw: bytes, context: grpc.ServicerContext):
        metadata = metadata_of(context)
        initial = lambda call: context.send_initial_metadata((("x-request-id", call.request_id),))  # noqa: E731
        out = self.run(f"grpc:{method}", metadata, raw, self.rpcs[method], initial)
        if out.code is SC.OK:
            return out.response
        if out.retry_after is not None:
            context.set_trailing_metadata((("retry-after", str(out.retry_after)),))
        context.abort(out.code, out.message)

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(method: str):
            return grpc.unary_unary_rpc_method_handler(
                lambda raw, context: self.serve(method, raw, context),
                request_deserializer=None,  # raw bytes: decoding is ours (see `serve`)
                response_serializer=lambda response: response.SerializeToString(),
            )

        handlers = {method: unary(method) for method in self.rpcs}
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.streams, request_deserializer=None, response_serializer=lambda r: r.SerializeToString()
        )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)


def start(api: OIP, gate: Gate, bind: str, threads: int, max_message: int) -> grpc.Server:
    """A listener in this worker; several workers share `bind` through SO_REUSEPORT."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=threads,  # past it: RESOURCE_EXHAUSTED, like the HTTP queue's 503
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", max_message),
        ],
    )
    # Each open stream holds an RPC thread for its life: a quarter of them at most, so streams
    # can't starve unary calls, and their read-ahead (WINDOW each) is the unary bound again.
    server.add_generic_rpc_handlers((Servicer(api, gate, max(1, threads // 4)).handler(),))
    if server.add_insecure_port(bind) == 0:
        raise OSError(f"gRPC could not bind {bind} (GRPC_BIND)")
    server.start()
    return server
