from sdopt.optimize.timing import Timing, measure


def test_measure_counts_warmup_and_repeats():
    calls = []
    timing = measure(lambda i: calls.append(i), warmup=2, repeats=4)
    assert calls == [0, 1, 2, 3, 4, 5]
    assert len(timing.samples_s) == 4
    assert timing.peak_memory_bytes and timing.peak_memory_bytes > 0
    assert timing.memory_kind == "rss"


def test_measure_stops_at_the_time_limit_but_not_before_min_repeats():
    import time

    timing = measure(lambda i: time.sleep(0.02), warmup=0, repeats=50, max_seconds=0.01,
                     min_repeats=3)
    assert len(timing.samples_s) == 3


def test_median_and_iqr():
    t = Timing([1.0, 2.0, 3.0, 4.0, 100.0])
    assert t.median_s == 3.0
    assert t.iqr_s < 100
    assert t.to_dict()["n"] == 5
