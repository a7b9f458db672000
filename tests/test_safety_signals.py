"""SIGTERM stops long-running commands within one second (issue 17, item 11)."""

import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import COMPILE_NOTICE

HEXSPEC = [sys.executable, "-m", "hexspec.cli"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seconds_to_stop(proc):
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return float("inf")
    return time.monotonic() - t0


@pytest.mark.slow
def test_serve_sim_push_without_a_reader_stops_on_sigterm_within_a_second():
    port = free_port()
    proc = subprocess.Popen(HEXSPEC + ["serve-sim", "--socket", "push", "--zmq", f"tcp://127.0.0.1:{port}",
                                       "--shape", "16", "16", "-q"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        if line.startswith(COMPILE_NOTICE):       # a cold numba cache says so first
            line = proc.stderr.readline()
        assert "Ctrl-C stops" in line
        time.sleep(1.0)          # now blocked in send: nobody reads a PUSH socket
        assert proc.poll() is None
        assert seconds_to_stop(proc) < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_simulate_stops_on_sigterm_within_a_second_leaving_no_partial_output(tmp_path):
    out = tmp_path / "big.h5"
    proc = subprocess.Popen(HEXSPEC + ["simulate", "-n", "10000000", "--shape", "16", "16", "-o", str(out), "-q"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".big.h5.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None
        assert seconds_to_stop(proc) < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_record_stops_on_sigterm_within_a_second_with_a_closed_file(tmp_path):
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(HEXSPEC + ["record", "sim://?seed=2&shape=16,16&rate=2000", "-o", str(out), "--raw", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert seconds_to_stop(proc) < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped by signal SIGTERM" in proc.stdout.read()
    import h5py
    with h5py.File(out, "r") as f:          # closed cleanly: opens without SWMR
        assert f["entry/frames/data"].shape[0] > 0
