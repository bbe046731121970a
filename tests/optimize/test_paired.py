"""Side-by-side rounds (#17): every contender once per round, the order rotated, the speedup the
median of per-round ratios with its quartiles, a time cap that never cuts below the minimum."""

import pytest

from sdopt.optimize.paired import Rounds, interleave


def test_rounds_rotate_the_order_and_warm_up_first():
    calls = []
    names = ["ref", "a", "b"]
    interleave({n: (lambda i, n=n: calls.append((n, i))) for n in names}, rounds=3, warmup=1)
    assert calls[:3] == [("ref", 0), ("a", 0), ("b", 0)], "one untimed round first"
    rounds = [[n for n, _ in calls[3 + 3 * r: 6 + 3 * r]] for r in range(3)]
    assert rounds == [["ref", "a", "b"], ["a", "b", "ref"], ["b", "ref", "a"]]
    assert all(i == 1 + r for r in range(3) for _, i in calls[3 + 3 * r: 6 + 3 * r])


def test_time_cap_stops_after_the_minimum_rounds():
    done = []
    out = interleave({"ref": lambda i: None, "a": lambda i: None}, rounds=50, warmup=0,
                     min_rounds=4, max_seconds=0.0, on_round=lambda: done.append(1))
    assert len(out.samples_s["ref"]) == len(out.samples_s["a"]) == 4 == len(done)


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # Round 3 is slow for both (drift): its ratio is still 2.
    rounds = Rounds({"ref": [2.0, 2.0, 8.0, 2.2], "a": [1.0, 1.0, 4.0, 1.0]})
    ratio = rounds.ratio("a", "ref")
    assert ratio.speedup == pytest.approx(2.0)
    assert ratio.q1 == pytest.approx(2.0) and ratio.q3 == pytest.approx(2.05)
    assert ratio.rounds == 4
    assert ratio.latency_s == pytest.approx(1.0) and ratio.reference_latency_s == pytest.approx(2.1)
    assert set(ratio.to_dict()) == {"speedup", "q1", "q3", "rounds", "latency_s",
                                    "reference_latency_s"}


def test_confirm_prefers_the_runner_up_the_rounds_put_ahead():
    """The search's sequential figures ranked A first; side by side B is clearly faster (sleeps
    of 30 / 10 ms against the reference's 60): B becomes the pick, with a note."""
    import time

    from sdopt.optimize.confirm import confirm
    from sdopt.optimize.table import CandidateResult, OptimizationResult

    def row(id_, latency):
        return CandidateResult(id_, id_.split("/")[0], id_.split("/")[1], "bf16", [], "ok",
                               latency_s=latency)

    original, a, b = row("torch_eager/fp32", 1.0), row("x/a", 0.5), row("y/b", 0.55)
    result = OptimizationResult({}, "numeric_precision", 0.05, "constrained", {},
                                [original, a, b], original, None)
    result.selected = a
    a.status = "selected"
    pick = confirm(result, 0.06, [(a, 0.03), (b, 0.01)],
                   lambda seconds: (lambda i: time.sleep(seconds)), level="unet",
                   device_kind="cpu", rounds=5, max_seconds=10.0)
    assert pick == (b, 0.01) and result.selected is b and b.status == "selected"
    assert a.status == "ok"
    assert a.paired["unet"]["speedup"] < b.paired["unet"]["speedup"]
    assert b.paired["unet"]["speedup"] > 3.0 and a.paired["unet"]["rounds"] == 5
    assert any("y/b" in n and "beat the search's pick x/a" in n for n in result.notes)


def test_the_runner_up_window_is_wider_per_unet_call_than_per_image():
    """Sequential UNet figures seconds apart were 24% off their side-by-side order on the tiny
    preset: a runner-up 24% slower is re-timed per call, but not per image."""
    from sdopt.optimize.confirm import close_runner_up
    from sdopt.optimize.table import CandidateResult

    def row(latency_s):
        return CandidateResult("openvino/x", "openvino", "x", "int8", [], "ok",
                               latency_s=latency_s, e2e_latency_s=latency_s)

    pick = row(1.0)
    assert close_runner_up(pick, row(1.24), level="unet")
    assert not close_runner_up(pick, row(1.24), level="e2e")
    assert close_runner_up(pick, row(1.10), level="e2e")
    assert not close_runner_up(pick, row(1.35), level="unet")
    assert not close_runner_up(pick, None, level="unet")
