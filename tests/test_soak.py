"""A short `make soak`: mixed good and bad requests through nginx, against the real stack."""

from scripts.procs import stack
from scripts.soak import soak, soak_env, verdicts


def test_short_soak(tmp_path):
    with stack({**soak_env(tmp_path, "resnet18"), "WORKERS": "2"}, tmp_path) as running:
        report = soak(
            running.url, running.gunicorn.pid, running.nginx.pid, [tmp_path / "tmp", tmp_path / "nginx"], 300, 8
        )
    met = dict(verdicts(report))
    assert met["zero 5xx"] and met["every request got its expected status"], report["outcomes"]
    assert met["no file descriptors left open"], report["fds_grown"]
    assert met["no temp files left"], report["temp_files_left"]
    # 300 requests are too few to judge the 5% target (make soak runs 3000); this catches a
    # leak that grows with every request, such as holding on to uploads.
    assert max(report["rss_growth"].values()) < 0.10, report["rss_growth"]
