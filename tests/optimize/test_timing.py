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


def test_every_iqr_is_pytest_benchmarks():
    """The search's IQR, results.json's and the pytest-benchmark export's are one statistic."""
    from pytest_benchmark.stats import Stats

    from sdopt.gate.bench import summarize
    from sdopt.gate.pytest_benchmark import pytest_benchmark_json

    samples = [12.0, 11.2, 13.9, 12.4, 11.9, 15.3, 12.1, 11.7, 12.8, 14.0, 11.5]
    reference = Stats()
    for s in samples:
        reference.update(s)
    results = {"config": {}, "environment": {"device": {}, "env": {}},
               "variants": {"original": {"latency_s": summarize(samples)}}}
    exported = pytest_benchmark_json(results)["benchmarks"][0]["stats"]
    assert Timing(samples).iqr_s == summarize(samples)["iqr"] == exported["iqr"] == reference.iqr
    assert exported["q1"] == reference.q1 and exported["q3"] == reference.q3
