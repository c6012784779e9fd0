"""What shows that a loaded model lost a process, and the crash-loop bound, as plain data."""

from __future__ import annotations

from gateway.loading.repair import MAX_REPAIRS, REPAIR_WINDOW_S, CrashWindow, dead_stub

OBSERVED = b'{"error":"Stub process \'add_one-5cccdea5d69b_0_0\' is not healthy."}'
"""Triton 2.51's answer to a request for a model whose stub was SIGKILLed."""


def test_dead_stub_matches_tritons_text_only():
    assert dead_stub(OBSERVED)
    assert dead_stub(b'{"error":"Stub process is not healthy."}')
    assert not dead_stub(b'{"error":"division by zero"}')
    assert not dead_stub(b'{"error":"model is not healthy"}')


def test_crash_window_allows_max_repairs_per_window_per_model():
    now = [0.0]
    window = CrashWindow(clock=lambda: now[0])
    assert [window.allow("a") for _ in range(MAX_REPAIRS + 1)] == [True] * MAX_REPAIRS + [False]
    assert window.allow("b")  # another model has a window of its own
    now[0] = REPAIR_WINDOW_S - 1
    assert not window.allow("a")
    now[0] = REPAIR_WINDOW_S + 0.5  # the first repairs have left the window
    assert window.allow("a")
