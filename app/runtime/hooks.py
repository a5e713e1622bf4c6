"""gunicorn's server hooks for this app; gunicorn_conf.py keeps the settings and binds these.

Each hook is documented, with why, where gunicorn_conf.py lists it.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable

from app.core.batching import run_here
from app.model.gpus import pick_gpu
from app.runtime.malloc import release_free_memory


def blocking_offload() -> Callable:
    """Under gevent, CPU-bound calls go to a real thread so the hub keeps serving."""
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return run_here
    if not monkey.is_module_patched("threading"):
        return run_here
    pool = get_hub().threadpool
    return lambda fn, *args: pool.apply(fn, args)


class Hooks:
    def __init__(
        self, gpus: list[int], workers_per_gpu: int, gevent: bool, metrics_dir: str, own_metrics_dir: bool, summary: str
    ):
        self.gpus, self.workers_per_gpu, self.gevent = gpus, workers_per_gpu, gevent
        self.metrics_dir, self.own_metrics_dir, self.summary = metrics_dir, own_metrics_dir, summary

    def on_starting(self, server) -> None:
        server.log.info("settings: %s", self.summary)

    def on_reload(self, server) -> None:
        """HUP: load and check the weights at MODEL_WEIGHTS in the master, then let the new
        workers fork from them (gunicorn would otherwise fork them from the app it preloaded).

        gunicorn then starts the new generation and stops the old one gracefully. Weights that
        fail to load are refused: the old workers are kept, still serving.
        """
        from app import create_app
        from app.config import Config, ConfigError
        from app.telemetry.metrics import RELOADS

        old = server.app.callable
        if old is None or not server.cfg.preload_app:
            return  # without preload every worker loads the app itself
        was = old.extensions["classifier"].info
        gc.unfreeze()  # let the old generation's objects be collected once unreferenced
        try:
            new = create_app(Config.from_env())
        except (ConfigError, OSError, RuntimeError) as exc:
            RELOADS.labels("refused").inc()
            server.log.error("reload refused, still serving version %s (%s): %s", was["version"], was["weights"], exc)
            # No new generation: gunicorn spawns cfg.workers after this hook, and the old workers
            # stay (the next HUP reads the setting afresh).
            server.cfg.set("workers", 0)
            return
        server.app.callable = new
        now = new.extensions["classifier"].info
        RELOADS.labels("done").inc()
        server.log.info("reloaded: version %s -> %s (%s)", was["version"], now["version"], now["weights"])
        server.reload_forks = server.cfg.workers
        del old
        gc.collect()

    def when_ready(self, server) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), self.metrics_dir)

    def pre_fork(self, server, worker) -> None:
        gc.collect()
        gc.freeze()
        if getattr(server, "reload_forks", 0) > 0:
            server.reload_forks -= 1  # a new generation after HUP, not a replacement for a crash
        elif worker.age > server.num_workers:
            from app.telemetry.metrics import WORKER_RESTARTS

            WORKER_RESTARTS.inc()
        if self.gpus:
            live = [getattr(w, "gpu", None) for w in server.WORKERS.values()]
            worker.gpu = pick_gpu(self.gpus, live, self.workers_per_gpu)

    def post_fork(self, server, worker) -> None:
        gc.enable()
        gpu = getattr(worker, "gpu", None)
        if gpu is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)  # only this GPU is visible, as cuda:0
        server.log.info("worker %s forked, gpu=%s", worker.pid, "none" if gpu is None else gpu)

    def post_worker_init(self, worker) -> None:
        app = worker.wsgi
        app.extensions["classifier"].start(blocking_offload())
        release_free_memory()  # warm-up's activations, freed, would stay in every worker (app/runtime/malloc.py)
        cfg = app.extensions["classifier"].cfg
        if cfg.grpc_bind:
            # grpc is first imported here, in the worker: nothing of it may exist before fork.
            from app.oip.grpc_server import start

            if self.gevent:
                import grpc.experimental.gevent

                grpc.experimental.gevent.init_gevent()  # grpc's threads cooperate with the hub
            # As many RPC threads as gthread has request threads: the same bound.
            worker.grpc_server = start(
                app.extensions["oip"],
                app.extensions["gate"],
                cfg.grpc_bind,
                worker.cfg.threads,
                cfg.max_upload_bytes + 65536,
            )
        worker.log.info("worker %s ready%s", worker.pid, f", gRPC on {cfg.grpc_bind}" if cfg.grpc_bind else "")

    def worker_abort(self, worker) -> None:
        from app.core.guard import in_flight

        worker.log.error(
            "worker %s timed out (timeout=%ds) serving: %s", worker.pid, worker.cfg.timeout, in_flight() or "no request"
        )

    def worker_exit(self, server, worker) -> None:
        grpc_server = getattr(worker, "grpc_server", None)
        if grpc_server is not None:
            grpc_server.stop(server.cfg.graceful_timeout).wait()  # finish in-flight RPCs, like HTTP requests
        server.log.info("worker %s exited", worker.pid)

    def child_exit(self, server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, self.metrics_dir)

    def on_exit(self, server) -> None:
        if self.own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
