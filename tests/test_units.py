"""Rate: unit parsing (bits vs bytes, SI vs IEC), formatting that round-trips, ordering."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import Rate, Rule, RuledPolicy, ThrottlekitError, UnitError
from throttlekit._throttle._units import parse_size


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("80Mbit/s", 10_000_000),  # Avamar --throttle=80
        ("10MiB/s", 10_485_760),
        ("10MB/s", 10_000_000),
        ("10kB/s", 10_000),
        ("512k", 524_288),  # rclone/rsync: a bare letter is binary bytes
        ("512K", 524_288),
        ("10M", 10_485_760),
        ("0.772 Mbps", 96_500),  # half a T1
        ("1Gbps", 125_000_000),
        ("8b/s", 1),
        ("8 bit", 1),
        ("1Kibit/s", 128),
        ("100Mb", 12_500_000),
        ("60MB/min", 1_000_000),
        ("3.6GB/h", 1_000_000),
        ("1.5", 1.5),
        (".5MB", 500_000),
        ("  10 MiB / s  ", 10_485_760),
        ("1e3MB", 1e9),
        ("2.5E-1KB", 250),
    ],
)
def test_parse_known_spellings(text: str, per_second: float) -> None:
    """Every common spelling parses to the exact bytes (or units) per second."""
    assert Rate.parse(text).per_second == pytest.approx(per_second, rel=1e-12)


def test_case_distinguishes_bits_from_bytes() -> None:
    """B is a byte and b is a bit: a factor of 8."""
    assert Rate.parse("8Mb/s").per_second * 8 == Rate.parse("8MB/s").per_second


def test_bare_number_is_units_per_second() -> None:
    """Without a unit, a rate counts units (operations, items), not bytes."""
    rate = Rate.parse("100/s")
    assert (rate.per_second, rate.kind) == (100, "units")
    assert Rate.parse("80Mbit").kind == "bytes"


@pytest.mark.parametrize("text", ["off", "unlimited", "OFF", " Unlimited "])
def test_unlimited(text: str) -> None:
    """off and unlimited mean no limit (an infinite rate)."""
    rate = Rate.parse(text)
    assert rate.is_unlimited
    assert rate.per_second == math.inf
    assert str(rate) == "unlimited"


def test_zero_is_paused() -> None:
    """0 is a paused rate: nothing passes until it changes."""
    assert Rate.parse("0").is_paused
    assert Rate.parse("0MB/s").is_paused
    assert not Rate.parse("1B/s").is_paused


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-1MB/s", "cannot be negative"),
        ("10XB/s", "unknown unit 'XB'"),
        ("10mb/s", "unknown unit 'mb'"),  # millibits are not a thing: case matters
        ("10MB/fortnight", "unknown time unit 'fortnight'"),
        ("10Mbps/s", "'Mbps' already means per second"),
        ("fast", "not a number followed by a unit"),
        ("nan", "not a number"),
        ("", "not a number"),
        ("e3MB", "not a number"),
        ("9" * 400 + "PB", "too large"),
    ],
)
def test_bad_text_is_a_unit_error_quoting_it(text: str, fragment: str) -> None:
    """Bad text is a UnitError (also a ValueError) that quotes it and lists the accepted forms."""
    with pytest.raises(UnitError) as info:
        Rate.parse(text)
    message = str(info.value)
    assert fragment in message
    assert repr(text) in message
    assert "KiB/MiB/GiB/TiB (x1024)" in message
    assert isinstance(info.value, ThrottlekitError)
    assert isinstance(info.value, ValueError)


def test_parse_rejects_non_strings_and_passes_rates_through() -> None:
    """parse() needs text; a Rate is returned as is."""
    rate = Rate.parse("1MB")
    assert Rate.parse(rate) is rate
    with pytest.raises(TypeError, match="needs a str"):
        Rate.parse(10)  # type: ignore[arg-type]


def test_constructor_validates() -> None:
    """Negative, NaN and non-numbers are refused with the argument's name."""
    with pytest.raises(ValueError, match="per_second must be >= 0"):
        Rate(per_second=-1)
    with pytest.raises(ValueError, match="per_second must be >= 0"):
        Rate(per_second=math.nan)
    with pytest.raises(TypeError, match="per_second must be a number of units per second"):
        Rate(per_second="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be"):
        Rate(per_second=1, kind="bits")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("80Mbit/s", "10MB/s"),
        ("10485760B/s", "10MiB/s"),
        ("0.772 Mbps", "96.5KB/s"),
        ("512k", "512KiB/s"),
        ("64KiB/h", "64KiB/h"),
        ("100/s", "100/s"),
        ("0", "0/s"),
        ("0B", "0B/s"),
    ],
)
def test_str_is_short_and_canonical(text: str, canonical: str) -> None:
    """str() picks the shortest exact spelling."""
    assert str(Rate.parse(text)) == canonical
    assert repr(Rate.parse(text)) == f"Rate.parse({canonical!r})"


@given(st.floats(min_value=0, max_value=1e18, allow_nan=False), st.sampled_from(["bytes", "units"]))
def test_str_round_trips(per_second: float, kind: str) -> None:
    """parse(str(rate)) == rate for every rate."""
    rate = Rate(per_second=per_second, kind=kind)  # type: ignore[arg-type]
    assert Rate.parse(str(rate)) == rate


def test_ordering_within_a_kind() -> None:
    """Rates of one kind sort by speed; mixing kinds is a TypeError."""
    assert Rate.parse("1MB/s") < Rate.parse("1MiB/s") < Rate.parse("off")
    assert max(Rate.parse("2M"), Rate.parse("1M")) == Rate.parse("2M")
    with pytest.raises(TypeError, match="cannot compare"):
        _ = Rate.parse("1MB/s") < Rate.parse("5/s")


def test_unlimited_and_paused_compare_with_both_kinds() -> None:
    """'off' and '0' mean the same for data and units, so a policy of unit rates may use them."""
    assert Rate.parse("5/s") < Rate.parse("off")
    assert Rate.parse("0") < Rate.parse("1MB/s")
    assert min(Rate.parse("100/s"), Rate.parse("unlimited")) == Rate.parse("100/s")


def test_rates_as_ruled_policy_values() -> None:
    """A RuledPolicy of rates gives each node its bandwidth; the smallest matching rate wins."""
    policy = RuledPolicy(
        default=Rate.parse("50MiB/s"),
        rules=[Rule("zone=edge", Rate.parse("40Mbit/s")), Rule("tier=bulk", Rate.parse("20MiB/s"))],
    )
    assert policy.resolve({"zone": "edge", "tier": "bulk"}).value == Rate.parse("5MB/s")
    assert str(policy.resolve({}).value) == "50MiB/s"


@pytest.mark.parametrize(
    ("text", "size"),
    [("64KiB", 65536), ("1MB", 1e6), ("512kbit", 64000), ("10M", 10 * 2**20), ("100", 100)],
)
def test_sizes_use_the_rate_units_without_time(text: str, size: float) -> None:
    """parse_size reads the same units as rates, in bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64KiB/s", "10Mbps", "10mb", "lots", "-5"])
def test_sizes_refuse_rates_and_unknown_units(text: str) -> None:
    """A rate, an unknown unit or a negative number is not a size."""
    with pytest.raises(UnitError, match="invalid size"):
        parse_size(text)
