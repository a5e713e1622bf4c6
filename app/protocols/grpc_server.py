"""Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), one listener per worker.

Each gunicorn worker starts a grpcio server after fork (`post_worker_init`), bound to
GRPC_BIND with SO_REUSEPORT, so the kernel spreads connections over the workers and each
request runs in the worker that owns the model copy, through the same batcher as HTTP.
Nothing of grpc is created before fork: grpcio can't survive a fork with live channels or
servers. nginx proxies the public :8001 (HTTP/2) to this loopback port.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc

from app.errors import APIError
from app.metrics import IN_FLIGHT, REQUESTS, observe_prediction
from app.protocols.codec import encode_grpc, parse_grpc
from app.protocols.oip import OIP
from app.requestlog import log_request
from app.service import RequestStats

logger = logging.getLogger(__name__)


def _load_protos():
    """The messages and service from inference.proto, compiled at import by grpcio-tools."""
    here = str(Path(__file__).parent)
    sys.path.insert(0, here)  # protos_and_services resolves the file against sys.path
    try:
        return grpc.protos_and_services("inference.proto")
    finally:
        sys.path.remove(here)


pb, services = _load_protos()
# An HTTP status of ours -> the gRPC code a client expects for it.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class Servicer(services.GRPCInferenceServiceServicer):
    def __init__(self, api: OIP):
        self.api = api

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.api.clf.ready)

    def ModelReady(self, request, context):
        return self._call(context, "ModelReady", request, lambda: pb.ModelReadyResponse(ready=self.api.clf.ready))

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.api.server_metadata())

    def ModelMetadata(self, request, context):
        return self._call(
            context, "ModelMetadata", request, lambda: pb.ModelMetadataResponse(**self.api.model_metadata())
        )

    def ModelConfig(self, request, context):
        return self._call(
            context,
            "ModelConfig",
            request,
            lambda: pb.ModelConfigResponse(config=pb.ModelConfig(**self.api.model_config())),
        )

    def ModelInfer(self, request, context):
        stats = RequestStats()

        def infer():
            self.api.clf.admit()
            parsed = parse_grpc(request)
            with IN_FLIGHT.track_inprogress():
                outputs = self.api.infer(parsed, stats)
            return encode_grpc(pb.ModelInferResponse(), parsed, self.api.name, self.api.version, outputs)

        return self._call(context, "ModelInfer", request, infer, stats, request.model_name, request.model_version)

    def _call(self, context, method, request, answer, stats=None, name=None, version=None):
        """Check the model, answer, and log/count it like an HTTP request; errors become gRPC codes."""
        started, status = time.perf_counter(), 200
        rid = dict(context.invocation_metadata()).get("x-request-id", "")
        try:
            self.api.check_model(
                request.name if name is None else name, request.version if version is None else version
            )
            return answer()
        except APIError as exc:
            status = exc.status
            context.abort(CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
        except Exception:
            status = 500
            logger.exception("unhandled error in gRPC %s, request %s", method, rid)
            context.abort(grpc.StatusCode.INTERNAL, f"internal server error; request id {rid}")
        finally:
            total = time.perf_counter() - started
            REQUESTS.labels(f"grpc:{method}", str(status)).inc()
            if stats is not None:
                observe_prediction(total, stats)
            log_request(rid, "POST" if stats else "GET", f"grpc:{method}", status, request.ByteSize(), stats, total)


def start(api: OIP, bind: str, threads: int, max_message: int) -> grpc.Server:
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
    services.add_GRPCInferenceServiceServicer_to_server(Servicer(api), server)
    if server.add_insecure_port(bind) == 0:
        raise OSError(f"gRPC could not bind {bind} (GRPC_BIND)")
    server.start()
    return server
