"""Configuration errors at start, with the real supervisord and the repo's supervisor.conf:
one clear line where the user looks (supervisord's own output: the terminal of `make serve`,
`docker logs`), no traceback, and no restart loop: our_app ends FATAL or EXITED (code 3)."""

from __future__ import annotations

import time

import pytest

from app import STARTUP_FAILED
from app.config import ROOT
from tests.conftest import VOC_LABELS, ctl, supervisord

LOG = ROOT / "run" / "our_app.log"

CASES = {
    "bad setting": ({"MODEL_TASK": "detection"}, "MODEL_TASK='detection' is not supported"),
    "missing weights": ({"MODEL_WEIGHTS": "/nonexistent/model.pth"}, "no such checkpoint"),
    # An unreachable local proxy: the download fails at once, and nothing leaves the machine.
    "failed download": (
        {"MODEL_WEIGHTS": "imagenet", "WEIGHTS_DIR": "{tmp}", "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": ""},
        "python -m app.model.weights fetch resnet18",
    ),
    "label count": ({"MODEL_LABELS": VOC_LABELS}, "has 20 labels but the model has 1000 outputs"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_configuration_error_stops_with_one_line(case, imagenet_ckpt, tmp_path):
    overrides, message = CASES[case]
    env = {"MODEL_ARCH": "resnet18", "MODEL_WEIGHTS": str(imagenet_ckpt), "WORKERS": "1"}
    env |= {k: v.replace("{tmp}", str(tmp_path)) for k, v in overrides.items()}  # "": unset for urllib
    if LOG.exists():
        LOG.unlink()  # this run's attempts only
    terminal = tmp_path / "supervisord.out"
    with supervisord(env, terminal):
        deadline, state = time.monotonic() + 120, ""
        while time.monotonic() < deadline:
            state = ctl("status", "our_app")
            if "FATAL" in state or "EXITED" in state:
                break
            time.sleep(0.5)
        # FATAL: it failed within startsecs, startretries times. EXITED: it failed later (a slow
        # load), with code 3, which exitcodes marks expected, so it is not restarted.
        assert "FATAL" in state or "EXITED" in state, state
        time.sleep(1)  # the event listener writes its line
        shown = [line for line in terminal.read_text().splitlines() if line.startswith(STARTUP_FAILED)]
        assert shown and message in shown[-1], terminal.read_text()[-3000:]
        log = LOG.read_text()
        attempts = log.count(STARTUP_FAILED)
        assert 1 <= attempts <= 4, log[-3000:]  # the first start and at most startretries (3) more
        assert "Traceback" not in log, log[-3000:]
        assert message in ctl("tail", "our_app")  # the reason is in the log tail too
        time.sleep(3)
        assert LOG.read_text().count(STARTUP_FAILED) == attempts  # no restart loop afterwards


def test_the_listener_reports_only_this_attempts_failure(tmp_path):
    from app.runtime.supervisor_events import reason

    log = tmp_path / "our_app.log"
    old = f"{STARTUP_FAILED}: MODEL_TASK='x' is not supported\n"
    log.write_text(old + "[INFO] Starting gunicorn 23.0.0\n[INFO] Booting worker\n")
    assert reason(log) is None  # fixed since, and started: nothing to report
    log.write_text(log.read_text() + f"{STARTUP_FAILED}: no such checkpoint\n")
    assert reason(log) == f"{STARTUP_FAILED}: no such checkpoint"
    assert reason(tmp_path / "missing.log") is None
