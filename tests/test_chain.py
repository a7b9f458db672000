"""The processing chain: push and pull give the same cube; one gap counter, restarts included."""

import numpy as np
import pytest

import hexspec as hx
from hexspec import pipeline
from hexspec.frames import GapCounter


def sparse_frames(seed, n, shape=(6, 7)):
    rng = np.random.default_rng(seed)
    return ((rng.random((n,) + shape) < 0.05) * rng.integers(20, 4000, (n,) + shape)).astype(np.uint16)


def test_gap_counter_counts_holes_within_and_across_batches():
    g = GapCounter()
    assert g.count([10, 11, 14]) == 2          # 12 and 13 inside the batch
    assert g.count([15, 20]) == 4              # none across the boundary, 16..19 inside
    assert g.count([23, 24]) == 2              # 21 and 22 across the boundary
    assert g.dropped == 8


def test_gap_counter_restarts_without_counting_on_a_number_that_does_not_increase():
    g = GapCounter()
    assert g.count([5, 6, 0, 1]) == 0          # a restart inside a batch
    assert g.count([3]) == 1                   # counting continues from the new numbering
    assert g.count([0, 1]) == 0                # a restart at a batch boundary
    assert g.dropped == 1
    # the older interface, from first and last numbers only, never counts a negative gap
    assert GapCounter().add(5, 4, 1) == 0


def test_the_pipeline_counts_no_dropped_frames_across_an_acquisition_restart():
    fr = np.zeros((6, 4, 4), np.uint16)
    res = pipeline.run([hx.FrameBatch(fr[:3], [7, 8, 9]), hx.FrameBatch(fr[3:], [0, 1, 3])], hx.ProcessingConfig())
    assert res.stats.frames_dropped == 1 and res.stats.frames == 6


def test_pushing_batches_and_pulling_a_source_give_the_same_cube_as_one_shot_extraction():
    fr = sparse_frames(5, 200)
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.05, charge_sharing="csd")
    numbers = np.arange(200)
    batches = [hx.FrameBatch(fr[s:s + 30], numbers[s:s + 30]) for s in range(0, 200, 30)]
    pushed = pipeline.Chain(cfg)
    for b in batches:
        pushed.feed(b)
    pulled = pipeline.Chain(cfg).run(iter(batches))
    want = hx.SpectralCube.from_events(hx.extract_events(fr, cfg), cfg, fr.shape[1:]).counts
    np.testing.assert_array_equal(pushed.result().cube.counts, want)
    np.testing.assert_array_equal(pulled.cube.counts, want)
    assert pushed.stats.frames == pulled.stats.frames == 200


def test_the_stages_apart_equal_the_fused_feed():
    fr = sparse_frames(6, 90)
    cfg = hx.ProcessingConfig(threshold=10, charge_sharing="csa", cluster_window=5)
    fused, apart = pipeline.Chain(cfg), pipeline.Chain(cfg)
    for s in range(0, 90, 25):
        fused.feed(fr[s:s + 25])
        apart.accumulate(apart.extract(fr[s:s + 25]))
    np.testing.assert_array_equal(fused.result().cube.counts, apart.accumulator.cube.counts)


class _Collect:
    def __init__(self):
        self.events, self.closed = 0, None

    def on_batch(self, batch, events):
        self.events += len(events)

    def close(self, result):
        self.closed = result


def test_sinks_see_every_event_and_the_result_and_the_chain_shows_its_stages():
    cfg = hx.ProcessingConfig(threshold=10, gradients=0.05)
    sink = _Collect()
    chain = pipeline.Chain(cfg, shape=(6, 7), sinks=[sink])
    assert repr(chain) == ("Chain(6x7: extract[threshold, next-frame, keV, csd 3x3] -> "
                           "accumulate[800 bins 0-200 keV] -> sinks[_Collect])")
    fr = sparse_frames(7, 40)
    result = chain.run([fr[:20], fr[20:]])
    assert sink.events == result.stats.events == len(hx.extract_events(fr, cfg))
    assert sink.closed is result


def test_an_extract_only_chain_refuses_to_accumulate():
    chain = pipeline.Chain(hx.ProcessingConfig(), shape=(2, 2), accumulate=False)
    assert chain.accumulator is None and len(chain.extract(np.zeros((1, 2, 2), np.uint16))) == 0
    with pytest.raises(hx.ConfigError, match="without an accumulate stage"):
        chain.accumulate(hx.EventList.empty())
