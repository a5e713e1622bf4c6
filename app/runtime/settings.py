"""gunicorn's settings from the environment, read by the same parser as the app's Config.

Zero means "work it out" for the counts that depend on the machine (workers, threads); the
resolution is in gunicorn_conf.py, which documents every setting. A bad value fails the
start with the variable's name, like every Config error.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import ConfigError, read_env


@dataclass(frozen=True)
class ServerSettings:
    bind: str = "127.0.0.1:10086"
    backlog: int = 2048
    gpus: str = ""  # "0,1", "none", or empty for every GPU the driver lists
    workers_per_gpu: int = 1
    threads_per_worker: int = 0  # torch threads per CPU worker; 0: 1 below 8 cores, else 4
    max_queue: int = 64
    max_batch_size: int = 0  # 0: 32 on GPUs, 4 on CPUs
    workers: int = 0  # 0: one per GPU x WORKERS_PER_GPU, or cores // THREADS_PER_WORKER
    worker_class: str = "gthread"
    threads: int = 0  # 0: MAX_QUEUE + 2 x MAX_BATCH_SIZE
    worker_connections: int = 1000
    timeout: int = 120
    graceful_timeout: int = 30
    keepalive: int = 5
    max_requests: int = 0
    max_requests_jitter: int = 0
    preload: bool = True
    access_log: str = "-"
    error_log: str = "-"
    log_level: str = "info"
    control_socket: str = ""  # gunicorn's control socket (gunicornc); empty: none

    @classmethod
    def from_env(cls, environ: dict | None = None) -> ServerSettings:
        settings = cls(**read_env(cls, environ))
        negative = [name for name, value in vars(settings).items() if isinstance(value, int) and value < 0]
        if negative:
            raise ConfigError(f"{negative[0].upper()} must be >= 0 (0 = the default)")
        return settings
