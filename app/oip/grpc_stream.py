"""`ModelStreamInfer`: OIP requests and their answers on one bidirectional gRPC stream.

Each message is a request of its own to the gate (counted, logged, admitted or refused like a
unary ModelInfer); the stream's key is checked once, from its metadata, before any message is
read. Answers come back in request order, and an error is answered in-band
(`error_message`), after which the stream goes on, as Triton's does.

Back-pressure: at most `window` requests of a stream are read ahead and in flight. Past that,
the reader stops reading, so gRPC's flow control holds the client (its sends block) rather
than this worker buffering what it sends; and every request still meets the shared queue bound
and its overload answer. The number of open streams per worker is bounded too, since each
holds threads for its life.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from app.core.errors import ServiceError, Unauthenticated
from app.core.guard import presented_key
from app.oip.grpc_proto import CODES, SC, pb

logger = logging.getLogger(__name__)
ENDPOINT = "grpc:ModelStreamInfer"
_END = object()


class Streams:
    def __init__(self, servicer, max_streams: int, window: int):
        self.servicer, self.window = servicer, window
        self.slots = threading.BoundedSemaphore(max_streams)

    def __call__(self, messages: Iterator[bytes], context: grpc.ServicerContext) -> Iterator:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        gate = self.servicer.gate
        if not self.slots.acquire(blocking=False):
            context.abort(SC.RESOURCE_EXHAUSTED, "too many open inference streams on this worker; retry later")
        try:
            try:
                gate.authorize(None, presented_key(metadata.get))  # None: protected, like ModelInfer
            except Unauthenticated as exc:
                call = gate.begin(ENDPOINT, ENDPOINT, "POST", metadata.get("x-request-id"), metadata.get("x-real-ip"))
                gate.end(call, CODES[exc.kind].name)
                context.abort(CODES[exc.kind], exc.message)
            yield from self._pipeline(messages, metadata)
        finally:
            self.slots.release()

    def _pipeline(self, messages: Iterator[bytes], metadata: dict) -> Iterator:
        answers: queue.Queue = queue.Queue()
        window = threading.BoundedSemaphore(self.window)
        stopped = threading.Event()
        pool = futures.ThreadPoolExecutor(self.window, thread_name_prefix="grpc-stream")

        def read() -> None:
            try:
                for raw in messages:
                    while not window.acquire(timeout=0.5):  # back-pressure: wait for an answer to go out
                        if stopped.is_set():
                            return
                    answers.put(pool.submit(self._one, raw, metadata))
            except grpc.RpcError:  # the client went away mid-stream
                pass
            finally:
                answers.put(_END)

        reader = threading.Thread(target=read, name="grpc-stream-reader", daemon=True)
        reader.start()
        try:
            while (answer := answers.get()) is not _END:
                response = answer.result()
                window.release()
                yield response
        finally:
            stopped.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def _one(self, raw: bytes, metadata: dict):
        """One request of the stream, through the gate like a unary ModelInfer."""
        gate = self.servicer.gate
        call = gate.begin(ENDPOINT, ENDPOINT, "POST", metadata.get("x-request-id"), metadata.get("x-real-ip"), len(raw))
        code, request_id, message = SC.UNKNOWN, "", ""
        try:
            request = self.servicer.decode(pb.ModelInferRequest, raw)
            request_id = request.id
            response = self.servicer.infer(request, call)
            code = SC.OK
            return pb.ModelStreamInferResponse(infer_response=response)
        except ServiceError as exc:
            code, message = CODES[exc.kind], exc.message
        except Exception:
            code, message = SC.INTERNAL, f"internal server error; request id {call.request_id}"
            logger.exception("unhandled error in gRPC ModelStreamInfer, request %s", call.request_id)
        finally:
            gate.end(call, code.name)
        # The error, in-band: the client's callback gets it with the request's id. Its status
        # code rides in a parameter too (Triton's stream has none), so a client can tell a
        # refusal to retry (UNAVAILABLE) from a bad request.
        response = pb.ModelInferResponse(id=request_id)
        response.parameters["grpc_status"].string_param = code.name
        return pb.ModelStreamInferResponse(error_message=message, infer_response=response)
