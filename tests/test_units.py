"""Rate: unit parsing (bits vs bytes, SI vs IEC), formatting that round-trips, ordering."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from throttlekit import Rate, Rule, RuledPolicy, ThrottlekitError, UnitError
from throttlekit._throttle._units import Family, format_amount, parse_data_rate, parse_size


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
        ("10XB/s/h", "not a number followed by a unit"),
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
    assert "KiB/MiB/GiB/TiB/PiB (x1024)" in message
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


# -- what users of other tools type (issue 12, item 7) ------------------------------------

MiB = 2**20


@pytest.mark.parametrize(
    ("tool", "text", "per_second"),
    [
        # rclone --bwlimit: a bare suffix is binary bytes (b/k/M/G)
        ("rclone", "10M", 10 * MiB),
        ("rclone", "1G", 2**30),
        ("rclone", "512k", 512 * 1024),
        ("rclone", "1.5M", 1.5 * MiB),
        # rsync --bwlimit: any case, binary
        ("rsync", "10m", 10 * MiB),
        ("rsync", "1.5m", 1.5 * MiB),
        ("rsync", "100k", 100 * 1024),
        ("rsync", "1g", 2**30),
        ("rsync", "10MB", 10_000_000),  # rsync too reads KB/MB as powers of 1000
        ("rsync", "10MiB", 10 * MiB),
        # curl --limit-rate
        ("curl", "10M", 10 * MiB),
        ("curl", "100K", 100 * 1024),
        ("curl", "1g", 2**30),
        # pv -L
        ("pv", "10m", 10 * MiB),
        ("pv", "512k", 512 * 1024),
        ("pv", "2T", 2 * 2**40),
        # Avamar --throttle (Mbit/s) and network gear
        ("avamar", "80Mbit/s", 10_000_000),
        ("avamar", "80mbit", 10_000_000),
        ("avamar", "80Mbps", 10_000_000),
        ("avamar", "80mbps", 10_000_000),
        ("avamar", "0.772 Mbps", 96_500),
        ("network", "10Gbps", 1.25e9),
        ("network", "100 kbps", 12_500),
        ("network", "10Mbits/s", 1_250_000),
        ("network", "10 Mb/s", 1_250_000),
        ("network", "1Mibit/s", MiB / 8),
        ("network", "1Kib/s", 128),
        # bytes per second spelled with ps, and words
        ("windows", "10MBps", 10_000_000),
        ("windows", "10kBps", 10_000),
        ("windows", "10KiBps", 10 * 1024),
        ("words", "5 MByte/s", 5_000_000),
        ("words", "5 mbytes/s", 5_000_000),
        ("words", "2 KIB/S", 2048),
        ("words", "10mB", 10_000_000),
        ("time", "60MB/Min", 1_000_000),
        ("time", "3.6GB/hr", 1_000_000),
        ("time", "10MiB/sec", 10 * MiB),
        ("time", "10MiB/seconds", 10 * MiB),
    ],
)
def test_every_tools_spelling(tool: str, text: str, per_second: float) -> None:
    """What rclone, rsync, curl, pv and Avamar users type parses to what their tool means."""
    rate = Rate.parse(text)
    assert rate.kind == "bytes", tool
    assert rate.per_second == pytest.approx(per_second, rel=1e-12), tool


@pytest.mark.parametrize(
    ("text", "unit", "use"),
    [
        ("10mb", "mb", "'MB' (10^6 bytes), 'MiB' or 'M' (2^20 bytes), or 'Mbit' (10^6 bits)"),
        ("10mb/s", "mb", "'MB' (10^6 bytes), 'MiB' or 'M' (2^20 bytes), or 'Mbit'"),
        ("512kb", "kb", "'KB' (10^3 bytes), 'KiB' or 'K' (2^10 bytes), or 'Kbit'"),
        ("1gb/s", "gb", "'GB' (10^9 bytes), 'GiB' or 'G' (2^30 bytes), or 'Gbit'"),
        ("10mib", "mib", "'MB' (10^6 bytes), 'MiB' or 'M' (2^20 bytes), or 'Mbit'"),
        ("10MBPS", "MBPS", "'Mbps' (bits per second) or 'MBps' / 'MB/s' (bytes per second)"),
        ("10KBPS", "KBPS", "'Kbps' (bits per second) or 'KBps' / 'KB/s'"),
        ("10BPS", "BPS", "'bps' (bits per second) or 'Bps' / 'B/s'"),
    ],
)
def test_ambiguous_spellings_name_the_ones_to_use(text: str, unit: str, use: str) -> None:
    """Lower-case mb (bytes to rsync, bits to a network engineer) and MBPS are refused, and
    the error names the unambiguous spellings instead of guessing a factor of 8."""
    with pytest.raises(UnitError) as info:
        Rate.parse(text)
    message = str(info.value)
    assert f"invalid rate {text!r}: unknown unit {unit!r}; expected {use}" in message
    assert "ambiguous" in message


@pytest.mark.parametrize(
    ("text", "size"),
    [("10m", 10 * MiB), ("1.5g", 1.5 * 2**30), ("64kB", 64_000), ("1 Mbit", 125_000)],
)
def test_sizes_accept_the_same_spellings(text: str, size: float) -> None:
    """Sizes read units exactly as rates do."""
    assert parse_size(text) == size


def test_sizes_refuse_ambiguous_spellings_naming_the_ones_to_use() -> None:
    """A size of '10mb' is refused like the rate, with the spellings to use."""
    with pytest.raises(UnitError, match=r"'mb' is ambiguous.*write 'MB' \(10\^6 bytes\)"):
        parse_size("10mb")
    with pytest.raises(UnitError, match="'Mbps' is a rate, not a size"):
        parse_size("10Mbps")


def test_a_bare_number_is_bytes_where_only_data_makes_sense() -> None:
    """parse_data_rate (command-line rates) reads '1e6' as bytes/s, as pv -L and curl do;
    Rate.parse keeps a bare number a count of units."""
    assert Rate.parse("1e6").kind == "units"
    rate = parse_data_rate("1e6")
    assert (rate.kind, rate.per_second, str(rate)) == ("bytes", 1e6, "1MB/s")
    assert parse_data_rate("1000/s") == Rate.parse("1KB/s")
    assert parse_data_rate("10m") == Rate.parse("10MiB/s")


# -- display in the family it was written in (issue 12, item 6) ---------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("100Mbps", "100Mbit/s"),
        ("80mbps", "80Mbit/s"),
        ("0.772 Mbps", "772Kbit/s"),
        ("1Gbps", "1Gbit/s"),
        ("40MiB/s", "40MiB/s"),
        ("10m", "10MiB/s"),
        ("1.5GB/s", "1.5GB/s"),
        ("1500MB", "1.5GB/s"),
        ("500KB/s", "500KB/s"),
        ("1.25KB", "1.25KB/s"),
        ("3.6GB/h", "1MB/s"),
        ("1Kibit/s", "1Kibit/s"),
        ("1024Kibit/s", "1Mibit/s"),
        ("8b/s", "8bit/s"),
        ("0Mbit/s", "0bit/s"),
    ],
)
def test_str_keeps_the_family_it_was_written_in(text: str, shown: str) -> None:
    """A rate prints per second in its own family (bits or bytes, SI or IEC), readably."""
    assert str(Rate.parse(text)) == shown
    assert repr(Rate.parse(text)) == f"Rate.parse({shown!r})"


def test_the_family_does_not_change_equality() -> None:
    """A rate written in bits equals the same rate in bytes, hashes alike, and sorts alike."""
    bits, byte_rate = Rate.parse("80Mbit/s"), Rate.parse("10MB/s")
    assert (bits.family, byte_rate.family) == ("SI bits", "SI")
    assert bits == byte_rate
    assert hash(bits) == hash(byte_rate)
    assert len({bits, byte_rate}) == 1
    assert not bits < byte_rate
    assert not byte_rate < bits


@pytest.mark.parametrize(
    ("per_second", "shown"),
    [(10_000_000, "10MB/s"), (10 * MiB, "10MiB/s"), (1500, "1.5KB/s"), (1024, "1KiB/s"),
     (500, "500B/s"), (0, "0B/s"), (0.5, "0.5B/s")],
)  # fmt: skip
def test_rates_from_numbers_print_in_the_shorter_byte_family(per_second: float, shown: str) -> None:
    """Without a family: bytes, SI or IEC, whichever spells the number exactly and shorter."""
    rate = Rate(per_second=per_second)
    assert rate.family is None
    assert str(rate) == shown


def test_family_is_checked() -> None:
    """An unknown family, or a family on a rate of units, is a ValueError naming it."""
    with pytest.raises(ValueError, match="family must be one of 'SI', 'IEC', 'SI bits'"):
        Rate(per_second=1, family="bits")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a rate of units has none"):
        Rate(per_second=1, kind="units", family="SI")
    assert str(Rate(per_second=1e6, family="SI bits")) == "8Mbit/s"


FAMILY_UNITS = {
    "SI": ("B", "KB", "MB", "GB", "TB", "PB"),
    "IEC": ("B", "KiB", "MiB", "GiB", "TiB", "PiB"),
    "SI bits": ("bit", "Kbit", "Mbit", "Gbit", "Tbit", "Pbit"),
    "IEC bits": ("bit", "Kibit", "Mibit", "Gibit", "Tibit", "Pibit"),
}


@given(
    st.sampled_from(["SI", "IEC", "SI bits", "IEC bits", None]),
    st.one_of(
        st.floats(min_value=0, max_value=1e300, allow_nan=False),
        st.floats(min_value=0, max_value=1e-3, allow_nan=False),
        st.integers(min_value=0, max_value=2**64).map(float),
    ),
)
def test_str_round_trips_exactly_in_every_family(family: Family | None, per_second: float) -> None:
    """parse(str(rate)) == rate exactly, in the same family, for every magnitude."""
    rate = Rate(per_second=per_second, family=family)
    text = str(rate)
    back = Rate.parse(text)
    assert back == rate
    assert back.per_second == per_second
    assert text.endswith("/s")
    if family is not None:
        unit = text.removesuffix("/s").lstrip("0123456789.e+-")
        assert unit in FAMILY_UNITS[family]
        if unit != FAMILY_UNITS[family][0]:  # plain B or bit does not say SI or IEC
            assert back.family == family
            assert str(back) == text


@given(
    st.sampled_from(sorted(FAMILY_UNITS)),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=100, max_value=999),
    st.integers(min_value=0, max_value=2),
)
def test_what_people_write_prints_back_as_written(
    family: str, power: int, digits: int, decimals: int
) -> None:
    """A number with three significant digits between 1 and 999 in a unit of a family prints
    back exactly as written: no float noise, no change of unit or family."""
    number = f"{digits / 10**decimals:g}"
    text = f"{number}{FAMILY_UNITS[family][power]}/s"
    assert str(Rate.parse(text)) == text


@given(st.floats(min_value=0, max_value=1e18, allow_nan=False))
def test_units_round_trip(per_second: float) -> None:
    """Rates of units print as a plain number per second and read back exactly."""
    rate = Rate(per_second=per_second, kind="units")
    assert Rate.parse(str(rate)) == rate


@pytest.mark.parametrize(
    ("amount", "family", "shown"),
    [
        (0, None, "0B"),
        (512, None, "512B"),
        (1536, None, "1.5KiB"),
        (12_345_678, None, "11.8MiB"),
        (1023 * 1024, None, "1023KiB"),
        (12_345_678, "SI", "12.3MB"),
        (20e6, "SI", "20MB"),
        (1.25e6, "SI bits", "10Mbit"),
        (128, "IEC bits", "1Kibit"),
        (100, "SI bits", "800bit"),
    ],
)
def test_format_amount_is_readable_in_a_family(
    amount: float, family: Family | None, shown: str
) -> None:
    """Progress lines show about three significant digits in the rate's family."""
    assert format_amount(amount, family) == shown


@given(
    st.one_of(
        st.text(max_size=20),
        st.builds(
            "{}{}{}{}".format,
            st.sampled_from(["1", "2.5", "0", ".5", "1e3", "-1", ""]),
            st.sampled_from(["", " "]),
            st.text(alphabet="kKmMgGtTpPiIbBytesYTESpPsS", max_size=7),
            st.sampled_from(["", "/s", "/S", "/min", "/h", "/x", "/"]),
        ),
    )
)
def test_any_text_is_a_rate_or_a_unit_error(text: str) -> None:
    """Whatever is typed, parse gives a rate that prints back to itself, or a UnitError."""
    try:
        rate = Rate.parse(text)
    except UnitError as e:
        message = str(e)
    else:
        assert Rate.parse(str(rate)) == rate
        message = repr(text)
    assert repr(text) in message
    try:
        size = parse_size(text)
    except UnitError:
        return
    assert size >= 0
