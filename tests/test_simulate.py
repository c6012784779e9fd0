from __future__ import annotations

import sys

import numpy as np
import pytest

from gateway.loading.eviction import LRUPolicy
from gateway.simulate import (
    MB,
    PATTERNS,
    Pattern,
    Trace,
    generate_trace,
    load_cost,
    main,
    next_uses,
    read_trace,
    simulate_belady,
    simulate_policy,
)

SHIFT_EVERY_5K = Pattern("shift", shift_every=5000)


def trace_of(sequence: str, sizes: dict[str, int]) -> Trace:
    names = sorted(sizes)
    ids = {n: i for i, n in enumerate(names)}
    requests = np.array([ids[c] for c in sequence], dtype=np.int64)
    return Trace(names, [sizes[n] for n in names], requests)


UNIT = {"A": 1, "B": 1, "C": 1, "D": 1}


def test_lru_on_unit_sizes_matches_hand_count():
    # cap 3: A B C miss, A hit, D evicts B, B evicts C, A hit.
    result = simulate_policy(trace_of("ABCADBA", UNIT), 3, LRUPolicy())
    assert (result.hits, result.loads, result.bytes_loaded) == (2, 5, 5)
    assert result.hit_ratio == pytest.approx(2 / 7)


def test_belady_on_unit_sizes_evicts_the_one_needed_farthest_away():
    # cap 3: A B C miss, A hit, D evicts C (never needed again), B hit, A hit.
    result = simulate_belady(trace_of("ABCADBA", UNIT), 3)
    assert (result.hits, result.loads, result.bytes_loaded) == (3, 4, 4)


def test_belady_with_sizes_evicts_in_next_use_order_until_it_fits():
    sizes = {"A": 2, "B": 1, "C": 1, "D": 2}
    # cap 4: A B C fill it; D evicts C (never) then A (farthest of A, B), B hit;
    # A evicts D (never again) rather than B (next), B hit.
    result = simulate_belady(trace_of("ABCDBAB", sizes), 4)
    assert (result.hits, result.loads, result.bytes_loaded) == (2, 5, 8)


@pytest.mark.parametrize("belady", [False, True])
def test_model_bigger_than_capacity_is_a_miss_and_never_loaded(belady):
    trace = trace_of("AAB", {"A": 10, "B": 1})
    result = simulate_belady(trace, 5) if belady else simulate_policy(trace, 5, LRUPolicy())
    assert (result.hits, result.loads, result.bytes_loaded) == (0, 1, 1)


def test_next_uses_points_at_the_next_request_for_the_same_model():
    requests = np.array([0, 1, 0, 2, 1], dtype=np.int64)
    assert next_uses(requests).tolist() == [2, 4, 5, 5, 5]


def test_load_cost_is_overhead_plus_500_mb_per_second():
    assert load_cost(0) == pytest.approx(0.5)
    assert load_cost(1000 * MB) == pytest.approx(2.5)


def test_read_trace_with_or_without_header_gives_the_same_trace(tmp_path):
    body = "2.0,b,200\n1.0,a,100\n3.0,a,100\n"
    with_header, without = tmp_path / "h.csv", tmp_path / "n.csv"
    with_header.write_text("timestamp,model,size\n" + body)
    without.write_text(body)
    for path in (with_header, without):
        trace = read_trace(path)
        assert [trace.names[m] for m in trace.requests] == ["a", "b", "a"]  # timestamp order
        assert dict(zip(trace.names, trace.sizes, strict=True)) == {"a": 100, "b": 200}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1.0,a\n", "t.csv:1: expected 3 fields"),
        ("1.0,a,100\nnow,b,100\n", "t.csv:2: timestamp must be a number"),
        ("1.0,a,1.5GB\n", "t.csv:1: .*size an integer"),
        ("1.0,a,-5\n", "t.csv:1: need a model name and a positive size"),
        ("1.0,a,100\n2.0,a,300\n", "t.csv:2: model 'a' has size 300, but 100"),
        ("timestamp,model,size\n", "no requests"),
    ],
)
def test_read_trace_bad_rows_raise_with_line_number(tmp_path, rows, message):
    path = tmp_path / "t.csv"
    path.write_text(rows)
    with pytest.raises(ValueError, match=message):
        read_trace(path)


def test_generated_trace_is_reproducible_with_a_seed():
    first = generate_trace(models=50, requests=2000, zipf=0.9, seed=7)
    again = generate_trace(models=50, requests=2000, zipf=0.9, seed=7)
    other = generate_trace(models=50, requests=2000, zipf=0.9, seed=8)
    assert np.array_equal(first.requests, again.requests) and first.sizes == again.sizes
    assert not np.array_equal(first.requests, other.requests)
    assert all(10 * MB <= s <= 5000 * MB for s in first.sizes)


def test_generated_trace_popularity_is_skewed_and_sizes_ignore_zipf():
    flat = generate_trace(models=100, requests=20_000, zipf=0.9, seed=1)
    steep = generate_trace(models=100, requests=20_000, zipf=1.2, seed=1)
    assert flat.sizes == steep.sizes
    top_share = np.bincount(steep.requests, minlength=100).max() / 20_000
    assert top_share > np.bincount(flat.requests, minlength=100).max() / 20_000
    assert top_share > 0.1


def test_main_prints_a_row_per_policy_for_a_csv_trace(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("".join(f"{i},{'ABCADBA'[i]},{MB}\n" for i in range(7)))
    main(["--trace", str(path), "--cache-fraction", "0.75", "--policies", "lru,belady"])
    out = capsys.readouterr().out
    assert "| lru | 0.2857 | 5 |" in out
    assert "| belady | 0.4286 | 4 |" in out


def test_main_sweep_prints_every_pattern_zipf_and_cache_cell_with_its_verdict(capsys):
    main(["--sweep", "--models", "40", "--requests", "3000"])
    rows = [line for line in capsys.readouterr().out.splitlines()[2:] if line.startswith("| ")]
    assert len(rows) == len(PATTERNS) * 2 * 3
    assert {row.split(" | ")[0][2:] for row in rows} == set(PATTERNS)
    for row in rows:
        verdict = row.rstrip(" |").rsplit("| ", 1)[1]
        assert verdict == "PASS" or verdict.startswith("MISS ")


def test_shift_reshuffles_popularity_every_k_requests():
    trace = generate_trace(models=50, requests=20_000, zipf=1.2, seed=3, pattern=SHIFT_EVERY_5K)
    tops = [int(np.bincount(trace.requests[i : i + 5000]).argmax()) for i in range(0, 20_000, 5000)]
    assert len(set(tops)) >= 3  # the most popular model changes from one epoch to the next
    still = generate_trace(models=50, requests=20_000, zipf=1.2, seed=3)
    assert (
        len(
            {
                int(np.bincount(still.requests[i : i + 5000]).argmax())
                for i in range(0, 20_000, 5000)
            }
        )
        == 1
    )


def test_drift_moves_only_the_given_fraction_of_ranks_at_a_time():
    pattern = Pattern("drift", shift_every=1000, shift_fraction=0.1)
    trace = generate_trace(models=200, requests=2000, zipf=1.2, seed=4, pattern=pattern)
    base = generate_trace(models=200, requests=2000, zipf=1.2, seed=4)
    assert np.array_equal(trace.requests[:1000], base.requests[:1000])
    changed = np.mean(trace.requests[1000:] != base.requests[1000:])
    assert 0 < changed < 0.2  # 20 of 200 models swapped places, most traffic unmoved


def test_bursts_go_to_one_off_models_in_runs_of_the_given_length():
    pattern = Pattern("burst", burst_fraction=0.2, burst_length=3)
    trace = generate_trace(models=100, requests=30_000, zipf=0.9, seed=5, pattern=pattern)
    assert len(trace.names) == len(trace.sizes) == 200 and trace.names[100] == "c00000"
    cold = trace.requests >= 100
    assert cold.mean() == pytest.approx(0.2, abs=0.01)
    runs = np.flatnonzero(cold).reshape(-1, 3)  # every one-off run is three in a row
    assert np.all(np.diff(runs, axis=1) == 1)
    assert np.all(trace.requests[runs[:, 0]] == trace.requests[runs[:, 2]])


@pytest.mark.parametrize(
    "flags",
    [["--shift-fraction", "0"], ["--burst-fraction", "1.5"], ["--burst-length", "0"]],
)
def test_main_rejects_bad_pattern_knobs(flags, capsys):
    with pytest.raises(SystemExit):
        main(["--pattern", "shift", *flags])
    assert "must be" in capsys.readouterr().err


def test_main_pattern_preset_with_a_knob_changes_the_trace(capsys):
    main(["--models", "50", "--requests", "4000", "--pattern", "burst", "--policies", "lru"])
    preset = capsys.readouterr().out
    main(
        [
            "--models",
            "50",
            "--requests",
            "4000",
            "--pattern",
            "burst",
            "--burst-fraction",
            "0.5",
            "--policies",
            "lru",
        ]
    )
    assert capsys.readouterr().out != preset


def test_main_rejects_unknown_policy():
    with pytest.raises(SystemExit):
        main(["--policies", "lru,fifo"])


def test_main_bad_trace_exits_with_the_reason(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1.0,a\n")
    with pytest.raises(SystemExit, match="expected 3 fields"):
        main(["--trace", str(path)])


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "hit.png"
    main(["--plot", str(out), "--models", "30", "--requests", "500"])
    assert out.read_bytes().startswith(b"\x89PNG")


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    with pytest.raises(SystemExit, match="pip install matplotlib"):
        main(["--plot", str(tmp_path / "hit.png"), "--models", "30", "--requests", "500"])
