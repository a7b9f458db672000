"""Simulated frames through real transports (ZMQ on loopback, a pseudo-terminal) and the CLI."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import hexspec as hx
from hexspec.cli import main
from hexspec.drivers import SerialSource, SerialWriter, ZmqPublisher, ZmqSource
from hexspec.sim import Am241Source, ComptonSource, HexitecSimulator
from hexspec.sim.publish import publish_frames


class ListSink:
    def __init__(self):
        self.batches = []

    def send(self, batch):
        self.batches.append(batch)


def _expected_frames(seed, n, source=Am241Source):
    return HexitecSimulator(source(), seed=seed).frames(n)[0]


def test_publish_frames_sends_the_requested_frames_in_order():
    sink = ListSink()
    stats = publish_frames(HexitecSimulator(Am241Source(), seed=3), sink, n_frames=2500, batch_frames=1000)
    assert [len(b) for b in sink.batches] == [1000, 1000, 500]
    numbers = np.concatenate([b.frame_numbers for b in sink.batches])
    assert numbers.tolist() == list(range(2500))
    assert stats.frames == 2500


def test_paced_publishing_sends_batches_of_a_twentieth_of_a_second():
    sink = ListSink()
    publish_frames(HexitecSimulator(Am241Source(), seed=3), sink, rate_hz=2000.0, n_frames=300)
    assert [len(b) for b in sink.batches] == [100, 100, 100]


def test_publish_frames_stops_when_the_stop_event_is_set():
    sink = ListSink()
    stop = threading.Event()

    def on_batch(stats):
        if stats.frames >= 200:
            stop.set()

    stats = publish_frames(HexitecSimulator(Am241Source(), seed=3), sink, batch_frames=100, stop=stop, on_batch=on_batch)
    assert stats.frames == 200


def _receive(source, n):
    got = []
    for batch in source:
        got.append(batch)
        if sum(len(b) for b in got) >= n:
            break
    return hx.FrameBatch(np.concatenate([b.frames for b in got]), np.concatenate([b.frame_numbers for b in got]))


def test_push_publisher_delivers_every_frame_to_a_pull_source():
    n = 600
    pub = ZmqPublisher("tcp://127.0.0.1:*", socket_type="PUSH")
    src = ZmqSource(pub.endpoint, socket_type="PULL", timeout_s=10)
    sender = threading.Thread(target=publish_frames, args=(HexitecSimulator(Am241Source(), seed=7), pub),
                              kwargs={"n_frames": n, "batch_frames": 250})
    sender.start()
    try:
        got = _receive(src, n)
    finally:
        sender.join(10)
        src.close()
        pub.close()
    expected = _expected_frames(7, n)
    assert np.array_equal(got.frame_numbers, expected.frame_numbers)
    assert np.array_equal(got.frames, expected.frames)


def test_pub_publisher_reaches_a_subscribed_sub_source():
    n = 300
    pub = ZmqPublisher("tcp://127.0.0.1:*", socket_type="PUB")
    src = ZmqSource(pub.endpoint, socket_type="SUB", timeout_s=10)
    try:
        time.sleep(1.0)   # PUB drops everything sent before the subscription has propagated (ms on loopback)
        publish_frames(HexitecSimulator(ComptonSource(), seed=8), pub, n_frames=n, batch_frames=100)
        got = _receive(src, n)
    finally:
        src.close()
        pub.close()
    expected = _expected_frames(8, n, ComptonSource)
    assert np.array_equal(got.frames, expected.frames)
    assert src.stats.dropped == 0


def test_serial_writer_delivers_frames_through_a_pseudo_terminal():
    n = 150
    master, slave = os.openpty()
    src = SerialSource(os.ttyname(slave), timeout_s=10)   # pyserial puts the terminal in raw mode
    writer_port = os.fdopen(master, "wb", buffering=0)
    writer = SerialWriter(writer_port)
    sender = threading.Thread(target=publish_frames, args=(HexitecSimulator(Am241Source(), seed=9), writer),
                              kwargs={"n_frames": n, "batch_frames": 50})
    sender.start()
    try:
        got = _receive(src, n)
    finally:
        sender.join(10)
        src.close()
        writer_port.close()
        os.close(slave)
    expected = _expected_frames(9, n)
    assert np.array_equal(got.frame_numbers, expected.frame_numbers)
    assert np.array_equal(got.frames, expected.frames)
    assert src.stats.corrupt == 0


def test_simulate_cli_writes_frames_and_truth_to_hdf5(tmp_path):
    out = tmp_path / "frames.h5"
    assert main(["simulate", "--source", "compton", "-n", "300", "--seed", "4", "-o", str(out), "-q"]) == 0
    sim = HexitecSimulator(ComptonSource(), seed=4)
    expected, truth = sim.frames(300)
    got = hx.io.read_frames(out)
    assert np.array_equal(got.frames, expected.frames)
    cal = hx.io.read_calibration(out)
    np.testing.assert_array_equal(cal["gradients"], truth.gradients)
    np.testing.assert_array_equal(cal["intercepts"], truth.intercepts)
    arrays, attrs = hx.io.read_results(out, "truth")
    np.testing.assert_array_equal(arrays["li_content"], truth.li_content)
    np.testing.assert_array_equal(arrays["theta_rad"], truth.theta_rad)
    import h5py
    with h5py.File(out, "r") as f:
        energy = f["entry/results/truth/photons/energy_kev"][()]
    np.testing.assert_array_equal(energy, truth.photons.energy_kev)


def test_simulate_cli_writes_gige_bin_with_calibration_maps(tmp_path):
    out = tmp_path / "frames.bin"
    assert main(["simulate", "-n", "200", "--seed", "5", "-o", str(out), "-q"]) == 0
    expected, truth = HexitecSimulator(Am241Source(), seed=5).frames(200)
    assert np.array_equal(hx.io.read_gige_bin(out).frames, expected.frames)
    np.testing.assert_allclose(hx.io.read_map(tmp_path / "frames_gradients.txt", (80, 80)), truth.gradients, rtol=1e-8)
    np.testing.assert_allclose(hx.io.read_map(tmp_path / "frames_intercepts.txt", (80, 80)), truth.intercepts, rtol=1e-8)


def test_simulate_cli_rejects_an_unknown_output_format(tmp_path, capsys):
    assert main(["simulate", "-n", "10", "-o", str(tmp_path / "frames.txt")]) == 1
    assert ".h5" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_sim_publishes_until_ctrl_c_and_exits_cleanly():
    with socket.socket() as probe:   # a free loopback port for the publisher to bind
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    pull = ZmqSource(endpoint, socket_type="PULL", timeout_s=30)   # connects; ZMQ retries until the bind
    proc = subprocess.Popen([sys.executable, "-m", "hexspec.cli", "serve-sim", "--zmq", endpoint,
                             "--socket", "push", "--rate", "0", "-q"],
                            stderr=subprocess.PIPE, text=True)
    try:
        got = _receive(pull, 500)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        pull.close()
    assert len(got) >= 500
    assert proc.returncode == 0
    assert "interrupted" in err
