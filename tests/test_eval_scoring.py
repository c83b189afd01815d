"""Answer extraction (also after a reasoning block), exact match, and Wilson intervals against
published values."""

from __future__ import annotations

import pytest

from swaa_ext.recipes.scoring import exact_match, extract_candidates, strip_thinking, \
    wilson_interval

FIVE = r"\d{5}"


def test_strip_thinking():
    assert strip_thinking("plain 12345") == "plain 12345"
    assert strip_thinking("<think>maybe 11111</think> it is 12345") == " it is 12345"
    assert strip_thinking("<think>a</think><think>b</think>c") == "c"
    assert strip_thinking("<think>still thinking about 12345") == ""


def test_exact_match_after_thinking_block():
    assert exact_match("<think>is it 11111? no</think> The pass key is 12345.", ["12345"], FIVE)[0]
    assert not exact_match("<think>The pass key is 12345", ["12345"], FIVE)[0]
    correct, prediction = exact_match("<think>12345</think> I think 54321.", ["12345"], FIVE)
    assert not correct and prediction == ["54321"]


def test_exact_match_single_answer_takes_the_first_candidate():
    assert exact_match(" 12345. Remember it.", ["12345"], FIVE) == (True, ["12345"])
    assert exact_match(" 12346 or 12345", ["12345"], FIVE) == (False, ["12346"])
    assert exact_match(" no idea", ["12345"], FIVE) == (False, [])


def test_candidates_are_whole_tokens():
    assert extract_candidates("123456 and 12345", FIVE) == ["12345"]
    assert extract_candidates("a12345 12345b (12345)", FIVE) == ["12345"]
    assert extract_candidates("VAR ABCDE, ABCDEF, XYZWV", "[A-Z]{5}") == ["ABCDE", "XYZWV"]


def test_multi_answer_is_an_order_free_set_match():
    answers = ["11111", "22222", "33333"]
    assert exact_match(" 33333, 11111 and 22222.", answers, FIVE)[0]
    assert exact_match(" 33333, 11111, 11111 and 22222. Also 44444", answers, FIVE)[0]
    assert not exact_match(" 33333, 44444 and 22222, 11111", answers, FIVE)[0]
    assert not exact_match(" 33333 and 22222", answers, FIVE)[0]


def test_excluded_strings_are_never_answers():
    text = " the value of key 0a1b2c3d is 9f8e7d6c"
    assert exact_match(text, ["9f8e7d6c"], "[0-9a-f]{8}", exclude=["0a1b2c3d"])[0]
    assert not exact_match(text, ["9f8e7d6c"], "[0-9a-f]{8}")[0]


@pytest.mark.parametrize("k,n,low,high", [
    # Wilson score 95 % intervals as tabulated by Newcombe (1998), Stat. Med. 17:857, and
    # recomputed by hand from p, n and z = 1.96.
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (8, 10, 0.4902, 0.9433),
    (50, 100, 0.4038, 0.5962),
    (81, 263, 0.2553, 0.3662),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_known_values(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("n", [1, 3, 7, 12, 29, 1000])
def test_wilson_ends_are_exact_and_contain_the_estimate(n):
    # An interval that misses its own point estimate by a rounding error breaks error bars.
    assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
    for k in range(n + 1):
        low, high = wilson_interval(k, n)
        assert low <= k / n <= high


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match="n must be"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)
