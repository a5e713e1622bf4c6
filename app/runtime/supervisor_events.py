"""A supervisord event listener that shows why the model server could not start.

supervisord keeps gunicorn's output in run/our_app.log, so a startup failure (bad settings,
missing weights, a failed download) was invisible in the terminal of `make serve` and in
`docker logs`, which show supervisord's own output. When our_app ends for good (FATAL, or
EXITED with the expected boot-error code), this copies the one-line reason the app printed
(`classifier: startup failed: ...`) to supervisord's stderr (supervisor.conf points this
listener's stderr there).

    [eventlistener:startup_errors] in supervisor.conf runs: python -m app.runtime.supervisor_events LOG
"""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor import childutils

from app import STARTUP_FAILED

PROGRAM = "our_app"
TAIL_BYTES = 65536


def reason(log: Path) -> str | None:
    """The last startup-failure line in the log's tail, if any."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - TAIL_BYTES))
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    # Only this attempt's: a failure comes before gunicorn's "Starting gunicorn" line (the app
    # loads first, with preload), so an older run's failure sits before a later start.
    tail = tail.rsplit("Starting gunicorn", 1)[-1]
    lines = [line for line in tail.splitlines() if line.startswith(STARTUP_FAILED)]
    return lines[-1] if lines else None


def main(log: Path) -> None:
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)  # the event protocol
        fields = childutils.get_headers(payload.split("\n", 1)[0])
        final = headers["eventname"] == "PROCESS_STATE_FATAL" or fields.get("expected") == "1"
        if fields.get("processname") == PROGRAM and final:
            line = reason(log)
            if line:
                state = headers["eventname"].removeprefix("PROCESS_STATE_")
                print(
                    f"{line} [{PROGRAM} {state}; supervisorctl tail {PROGRAM} shows more]", file=sys.stderr, flush=True
                )
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
