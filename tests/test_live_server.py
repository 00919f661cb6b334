"""A live network source that goes down and comes back, served by an MJPEG HTTP server on the loopback
address: the run outlives the outage, which is counted, and no frame from before it is delivered after it."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from runtime import Predictor

BOUNDARY = "frame"
FPS = 20.0


class MjpegServer:
    """Serves ``/stream.mjpg`` on 127.0.0.1: JPEG frames whose grey level is the current ``phase`` (so a
    test can tell frames from before and after an outage). :meth:`down` closes the port and every open
    connection; :meth:`up` serves again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.phase = 1
        self._server: ThreadingHTTPServer | None = None
        self._alive = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                period, deadline = 1.0 / FPS, time.monotonic() + 60  # bounded: the test never needs a minute
                while server._alive.is_set() and time.monotonic() < deadline:
                    image = np.full((96, 128, 3), 60 * server.phase, np.uint8)
                    ok, jpeg = cv2.imencode(".jpg", image)
                    try:
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         f"{len(jpeg)}\r\n\r\n".encode() + jpeg.tobytes() + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(period)

        return Handler

    def up(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._alive.set()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self._alive.clear()  # open connections end their response
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture()
def server():
    served = MjpegServer()
    served.up()
    yield served
    served.down()


def test_a_stream_that_goes_down_and_comes_back(tiny_detect_onnx, server):
    """Down for 5 s, longer than the 3.5 s of reconnect attempts the runtime used to give up after."""
    predictor = Predictor(tiny_detect_onnx)
    phases, outage_started = [], None
    stream = predictor.stream_with_images(server.url, max_frames=60)
    try:
        for result, image in stream:
            phases.append(round(float(image[0, 0, 0]) / 60))  # JPEG keeps the grey level within a few steps
            if len(phases) == 10 and outage_started is None:
                server.down()
                outage_started = time.monotonic()
                threading.Timer(5.0, lambda: (setattr(server, "phase", 2), server.up())).start()
    finally:
        stream.close()
    assert len(phases) == 60, "the run ended at the outage"
    assert phases[:10] == [1] * 10 and phases[-1] == 2
    first_after = phases.index(2)
    assert set(phases[first_after:]) == {2}, "a frame from before the outage came after it"
    ((lost, seconds),) = stream.stats.outages.values()
    assert lost == 1 and 4.0 < seconds < 30.0


def test_ctrl_c_stops_a_run_that_waits_for_an_unreachable_stream(tiny_detect_onnx, tmp_path):
    """`python -m runtime.infer http://127.0.0.1:PORT/none` reconnects until stopped: one Ctrl-C ends it at once,
    with the interrupted status, though no frame ever came."""
    import os
    import signal
    import subprocess
    import sys

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.infer", f"http://127.0.0.1:{port}/none", "-m",
                             str(tiny_detect_onnx), "--no-save"], cwd=repo, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the outage is logged once it starts: the run is waiting for the stream
            if "reconnecting until it is back" in line:
                break
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
