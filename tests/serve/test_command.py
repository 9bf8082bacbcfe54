"""`python -m sum_jax.serve` as a user runs it: it prints its address and serves the API; a
checkpoint that does not load or a taken port stops it at start-up with exit status 2."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.serve.conftest import check_answer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def serve_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "sum_jax.serve", *flags]


def post(url: str, body: dict) -> tuple[int, dict]:
    """POSTs JSON; the status and the answer, checked against its declared shape."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, answer = r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        status, answer = e.code, json.loads(e.read())
    check_answer("POST", url, status, answer)
    return status, answer


def get(url: str) -> dict:
    """GETs a JSON answer, checked against its declared shape."""
    with urllib.request.urlopen(url, timeout=30) as r:
        answer = json.loads(r.read())
    check_answer("GET", url, r.status, answer)
    return answer


def test_serves_pretrained_small_and_the_demo_model_and_prints_its_address(photo_dir, tmp_path):
    import shutil

    from sum_jax.checkpointing import model_dir

    # A demo workdir whose SUM model is a copy of the shipped small SAM.
    shutil.copytree(model_dir("pretrained:small"), tmp_path / "demo" / "sum" / "model")
    process = subprocess.Popen(
        serve_command(f"--images={photo_dir}", "--port=0", f"--demo={tmp_path / 'demo'}"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()  # printed once the models are loaded
        assert "serving SAM, SUM on 3 images at http://127.0.0.1:" in line, line  # loopback
        assert "compiling for 1 image size(s) in the background" in line, line
        url = line.split(" at ")[1].split()[0]
        info = get(url + "api/info")
        assert info["banner"] is None
        line = process.stdout.readline()  # printed once every click is compiled
        assert line.startswith("ready: every click compiled for 1 image size(s) in "), line
        status = get(url + "api/status")
        assert status["ready"] and status["done"] == status["total"] == 1, status
        assert [m["img_size"] for m in info["models"]] == [128, 128]
        body = {"image_id": "chelsea.jpg", "points": [[100, 100, 1]]}
        status, answer = post(url + "api/predict", body)
        assert status == 200 and len(answer["models"]["SAM"]["candidates"]) == 3
        # The page's first image was embedded during the warm-up: the click did not wait.
        assert answer["models"]["SAM"]["embed_ms"] == answer["models"]["SUM"]["embed_ms"] == 0
        status, answer = post(url + "api/predict", {**body, "points": [[1000, 1, 1]]})
        assert status == 400 and "outside the image" in answer["error"]
        assert post(url + "api/predict", body)[0] == 200  # still serving
    finally:
        process.send_signal(signal.SIGINT)
        try:
            # Ctrl-C stops it (uvicorn shuts down, then re-raises the signal, as Python would).
            assert process.wait(timeout=30) in (0, -signal.SIGINT)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_checkpoint_that_does_not_load_stops_with_status_2(tmp_path):
    broken = tmp_path / "broken"
    (broken / "params").mkdir(parents=True)
    (broken / "sam_config.json").write_text("{not json")
    for flag, words in [
        (f"--checkpoint=SUM={tmp_path / 'missing'}", "does not exist"),
        (f"--checkpoint=SUM={broken}", "is not a valid SamConfig"),
        ("--checkpoint=SUM=random:huge", "does not load"),
        ("--checkpoint=SUM=pretrained:huge", "no such pretrained model"),
    ]:
        run = subprocess.run(
            serve_command(flag, "--port=0"), check=False, cwd=ROOT, capture_output=True, text=True
        )
        assert run.returncode == 2, run.stderr
        assert "error: --checkpoint=SUM=" in run.stderr and words in run.stderr
        assert "Traceback" not in run.stderr


def test_a_port_out_of_range_stops_with_status_2_before_loading_anything():
    run = subprocess.run(
        serve_command("--port=99999"), check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "error: --port=99999 is not a TCP port: use 1..65535" in run.stderr


def test_a_taken_port_stops_with_status_2(taken_port):
    run = subprocess.run(
        serve_command(f"--port={taken_port}"), check=False, cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 2
    assert f"cannot listen on 127.0.0.1:{taken_port}" in run.stderr and "--port" in run.stderr
