"""Load on the web app: clicks from concurrent clients on loopback, next to the bare predictor.

    python benchmarks/serve_load.py                      # random tiny model, 200 clicks, 4 clients
    python benchmarks/serve_load.py --checkpoint=SAM=ckpt/sam_vit_b --checkpoint=SUM=runs/m
    python benchmarks/serve_load.py --screenshot=docs/serve.png \
        --checkpoint=SAM=pretrained:small --checkpoint=SUM=out/demo/sum/model --image=coffee \
        --click=0.72,0.42

Starts `python -m sum_jax.serve` on 127.0.0.1 (a free port; nothing leaves the machine),
embeds one photo, then `--clients` threads send `--clicks` `POST /api/predict` requests in
all (1 to 3 random points each, the models of the server answering each). Prints every
request's round trip as p50 / p95 / max, the server's per-model decoder time, failed
requests (the exit status is 1 if any), and for reference the same prompts through
`SamPredictor.predict` in this process, one after another: the ratio says what HTTP, JSON,
PNG-encoding and queueing add per click. Bounded: at most `--max_seconds` of clicking.

The server's start-up warm-up (every click shape compiled for each listed image size) is
waited for and timed first. `--browser_clicks=N` (default 10) then opens the page in headless
Chromium (Debian's chromium and chromium-driver, 1400x900), clicks N points one after another
and prints what the page measured per click (Performance API): server time, round trip and
drawing; `--large_clicks=N` (default 5) then uploads a 4000x3000 photo in the page (its
embedding compiles the frame of the page's masks of large photos, timed) and clicks it N
times. `--screenshot=PATH` clicks a positive and a negative point and saves the page.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentiles(values_ms: list[float]) -> str:
    if not values_ms:
        return "n/a"
    p50, p95 = np.percentile(values_ms, [50, 95])
    return f"p50 {p50:7.1f} ms   p95 {p95:7.1f} ms   max {max(values_ms):7.1f} ms"


def start_server(checkpoints: list[str]) -> tuple[subprocess.Popen, str]:
    """`python -m sum_jax.serve --port=0` on loopback; returns (process, url)."""
    command = [sys.executable, "-m", "sum_jax.serve", "--host=127.0.0.1", "--port=0"]
    command += [f"--checkpoint={c}" for c in checkpoints]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        print(f"  server: {line.rstrip()}")
        if " at http://" in line:
            return process, line.split(" at ")[1].split()[0]
    raise SystemExit(f"the server exited with status {process.wait()}")


def wait_ready(url: str, timeout: float = 1800) -> dict:
    """Polls `GET /api/status` until the server's warm-up is done; returns the last status."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url + "api/status", timeout=30) as r:
            status = json.loads(r.read())
        if status["ready"] or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def browser_timings(url: str, clicks: int, large_clicks: int, seed: int) -> dict:
    """`clicks` left/right clicks in the page, one after another (headless Chromium,
    1400x900), then a 4000x3000 photo uploaded and clicked `large_clicks` times; the page's
    own measures per click (server, request and draw ms) and the upload's embedding."""
    from tests.serve import webdriver

    rng = np.random.default_rng(seed)

    def click_photo(browser, n: int) -> list[dict]:
        first = len(browser.run("return window.sumServe.timings"))
        rect = browser.run("return document.querySelector('canvas.photo')"
                           ".getBoundingClientRect().toJSON()")  # fmt: skip
        for k in range(n):
            if k % 5 == 0:
                browser.run("document.getElementById('reset').click()")
            seq = browser.run("return window.sumServe.seq")
            x = rect["x"] + rng.uniform(0.1, 0.9) * rect["width"]
            y = rect["y"] + rng.uniform(0.1, 0.9) * rect["height"]
            browser.click(round(x), round(y), "left" if k % 2 == 0 else "right")
            browser.wait_for(f"const s = window.sumServe; return s.seq > {seq} && "
                             "s.shown === s.seq", timeout=120)  # fmt: skip
        return browser.run("return window.sumServe.timings")[first:]

    result = {"small": [], "large": [], "large_embed": None}
    with webdriver.Chromium(width=1400, height=900) as browser:
        browser.set_viewport(1400, 900)
        browser.open(url)
        browser.wait_for("return document.getElementById('status').textContent"
                         ".includes('embedded')", timeout=600)  # fmt: skip
        result["small"] = click_photo(browser, clicks)
        if large_clicks:
            small = rng.integers(0, 255, (30, 40, 3), np.uint8)
            big = Image.fromarray(small).resize((4000, 3000), Image.BILINEAR)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "large_4000x3000.jpg"
                big.save(path, quality=90)
                browser.upload("#upload", str(path))
                result["large_embed"] = browser.wait_for(
                    "const s = window.sumServe; const t = document.getElementById('status')"
                    ".textContent; return s.image && s.image.width === 4000 && "
                    "t.includes('embedded') && t;",
                    timeout=1200,
                )
            result["large"] = click_photo(browser, large_clicks)
    return result


def post(conn: http.client.HTTPConnection, path: str, body: dict) -> tuple[int, dict]:
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def make_prompts(n: int, width: int, height: int, seed: int) -> list[list[list[float]]]:
    """`n` prompts of 1-3 points each (the first positive, later ones random labels)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        xy = rng.uniform([0, 0], [width - 1, height - 1], size=(k, 2)).round(1)
        labels = [1] + rng.integers(0, 2, size=k - 1).tolist()
        prompts.append([[float(x), float(y), int(lab)] for (x, y), lab in zip(xy, labels)])
    return prompts


def load(url: str, image_id: str, prompts, clients: int, max_seconds: float) -> dict:
    """Sends `prompts` from `clients` threads; returns latencies, server times and failures."""
    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    queue = list(enumerate(prompts))
    lock = threading.Lock()
    latencies, server_ms, failures = [], {}, []
    deadline = time.monotonic() + max_seconds

    def client():
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        while time.monotonic() < deadline:
            with lock:
                if not queue:
                    break
                i, points = queue.pop()
            start = time.perf_counter()
            try:
                status, answer = post(
                    conn, "/api/predict", {"image_id": image_id, "points": points}
                )
            except (OSError, http.client.HTTPException, ValueError) as e:
                status, answer = None, {"error": repr(e)}
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
            elapsed = (time.perf_counter() - start) * 1e3
            with lock:
                if status != 200:
                    failures.append((i, status, answer.get("error")))
                    continue
                latencies.append(elapsed)
                for name, m in answer["models"].items():
                    server_ms.setdefault(name, []).append(m["ms"])
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"latencies": latencies, "server_ms": server_ms, "failures": failures,
            "unsent": len(queue), "seconds": time.perf_counter() - start}  # fmt: skip


def direct(checkpoints: list[str], image: np.ndarray, prompts) -> dict[str, list[float]]:
    """The same prompts through `SamPredictor.predict` here, sequentially (reference)."""
    from sum_jax.checkpointing import load_model
    from sum_jax.inference.predictor import SamPredictor
    from sum_jax.serve.sessions import parse_checkpoint

    times = {}
    for spec in checkpoints:
        name, path = parse_checkpoint(spec)
        predictor = SamPredictor(load_model(path))
        predictor.set_image(image)
        for multimask in (True, False):  # compile both outside the timing
            predictor.predict(np.array([[1.0, 1.0]]), np.array([1]), multimask_output=multimask)
        times[name] = []
        for points in prompts:
            p = np.array(points)
            start = time.perf_counter()
            predictor.predict(p[:, :2], p[:, 2].astype(int), multimask_output=len(p) == 1)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def screenshot(url: str, path: str, clicks: list[tuple[float, float, str]]) -> None:
    """Opens the page in headless Chromium, clicks, waits for the masks, saves the page."""
    from tests.serve import webdriver

    with webdriver.Chromium(width=1280, height=1000) as browser:
        browser.open(url)
        browser.wait_for("return document.getElementById('status').textContent"
                         ".includes('embedded')", timeout=300)  # fmt: skip
        rect = browser.run("return document.querySelector('canvas.photo')"
                           ".getBoundingClientRect().toJSON()")  # fmt: skip
        width = browser.run("return window.sumServe.image.width")
        scale = rect["width"] / width
        for x, y, button in clicks:
            seq = browser.run("return window.sumServe.seq")
            browser.click(round(rect["x"] + x * scale), round(rect["y"] + y * scale), button)
            browser.wait_for(f"const s = window.sumServe; return s.seq > {seq} && "
                             "s.shown === s.seq", timeout=120)  # fmt: skip
        shot = Image.open(io.BytesIO(browser.screenshot())).convert("RGB")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # 256 colours (octree keeps the small, saturated click markers): a quarter of the bytes,
    # for a picture kept in the repository.
    shot.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    print(f"screenshot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="NAME=DIR, repeatable (default: random:tiny)")  # fmt: skip
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--image", default="chelsea", help="an id of the sample photos")
    parser.add_argument("--max_seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--screenshot", default=None, help="save a picture of the page here")
    parser.add_argument("--browser_clicks", type=int, default=10,
                        help="clicks in headless Chromium, timed by the page (0: none)")  # fmt: skip
    parser.add_argument("--large_clicks", type=int, default=5,
                        help="then clicks on a 4000x3000 upload in the page (0: none)")  # fmt: skip
    parser.add_argument("--click", action="append", default=[],
                        help="screenshot click 'FX,FY' (positive) or 'FX,FY:0' (negative), as "
                        "fractions of the photo's width and height; default: 0.45,0.5 and "
                        "0.1,0.12:0")  # fmt: skip
    args = parser.parse_args()
    checkpoints = args.checkpoint or ["random:tiny=random:tiny"]

    process, url = start_server(checkpoints)
    try:
        warm = wait_ready(url)
        print(f"  warm-up: {warm}")
        conn = http.client.HTTPConnection(*url.split("//")[1].strip("/").rsplit(":", 1))
        status, embedded = post(conn, "/api/embed", {"image_id": args.image})
        if status != 200:
            raise SystemExit(f"embed failed: {embedded}")
        w, h = embedded["width"], embedded["height"]
        prompts = make_prompts(args.clicks, w, h, args.seed)
        post(conn, "/api/predict", {"image_id": args.image, "points": prompts[0]})  # warm
        result = load(url, args.image, prompts, args.clients, args.max_seconds)
        page = (browser_timings(url, args.browser_clicks, args.large_clicks, args.seed)
                if args.browser_clicks else None)  # fmt: skip
        if args.screenshot:
            clicks = []
            for spec in args.click or ["0.45,0.5", "0.1,0.12:0"]:
                where, _, label = spec.partition(":")
                fx, fy = (float(v) for v in where.split(","))
                clicks.append((fx * w, fy * h, "right" if label == "0" else "left"))
            screenshot(url, args.screenshot, clicks)
    finally:
        process.terminate()
        process.wait(timeout=30)

    from sum_jax.serve.images import SAMPLES, sample_photo

    module, attribute = next((m, a) for i, m, a in SAMPLES if i == args.image)
    reference = direct(checkpoints, sample_photo(module, attribute), prompts)

    done = len(result["latencies"])
    print(f"\n{done} of {args.clicks} clicks answered by {', '.join(result['server_ms'])} "
          f"from {args.clients} clients in {result['seconds']:.1f} s "
          f"({done / result['seconds']:.1f} clicks/s); failed: {len(result['failures'])}, "
          f"not sent (time limit): {result['unsent']}")  # fmt: skip
    print(f"request round trip (all models):  {percentiles(result['latencies'])}")
    for name, values in result["server_ms"].items():
        print(f"  server decoder time, {name:>10}: {percentiles(values)}")
    for name, values in reference.items():
        print(f"  SamPredictor.predict, {name:>9}: {percentiles(values)}  (in process, sequential)")
    direct_p50 = sum(statistics.median(v) for v in reference.values())
    print(f"round trip p50 / sum of direct p50s: "
          f"{statistics.median(result['latencies']) / direct_p50:.1f}x")  # fmt: skip
    if page:
        print(f"in the page, {len(page['small'])} clicks one after another on {args.image} "
              "(headless Chromium, 1400x900):")  # fmt: skip
        for key in ("server", "request", "draw"):
            print(f"  {key:>7}: {percentiles([t[key] for t in page['small']])}")
        if page["large"]:
            print(f"a 4000x3000 upload: {page['large_embed']}")
            print(f"  then {len(page['large'])} clicks, ms each (server / request / draw): "
                  + ", ".join(f"{t['server']:.0f} / {t['request']:.0f} / {t['draw']:.0f}"
                              for t in page["large"]))  # fmt: skip
    for failure in result["failures"][:5]:
        print(f"  failed: click {failure[0]}: status {failure[1]}: {failure[2]}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
