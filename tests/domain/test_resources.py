"""Resource strings: memory sizes, CPU millicores and durations, parsed and formatted."""

from __future__ import annotations

import pytest

from caxton.domain.resources import format_cpu, format_memory, parse_cpu, parse_duration, parse_memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50MB", 50 * 10**6),
        ("512KB", 512 * 10**3),
        ("1GB", 10**9),
        ("1.5GB", 1_500_000_000),
        ("64Mi", 64 * 2**20),
        ("64MiB", 64 * 2**20),
        ("2Gi", 2 * 2**30),
        ("8Ki", 8 * 2**10),
        ("50mb", 50 * 10**6),
        (" 10 MB ", 10 * 10**6),
        ("4096", 4096),
        ("100B", 100),
        ("3M", 3 * 10**6),
        (2048, 2048),
    ],
)
def test_parse_memory_units(text, expected):
    assert parse_memory(text) == expected


def test_parse_memory_unknown_unit_named():
    with pytest.raises(ValueError, match="unknown memory unit 'TB' in '5TB'"):
        parse_memory("5TB")


@pytest.mark.parametrize("text", ["MB", "-5MB", "5 M B", "1e6", ""])
def test_parse_memory_malformed(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_memory(text)


@pytest.mark.parametrize("text", ["0", "0MB", "0.1B", 0])
def test_parse_memory_zero_rejected(text):
    with pytest.raises(ValueError, match="must be above zero"):
        parse_memory(text)


@pytest.mark.parametrize("value", [True, 1.5, None, ["50MB"]])
def test_parse_memory_wrong_type(value):
    with pytest.raises(ValueError, match="expected a size"):
        parse_memory(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100m", 100), ("1500m", 1500), ("0.5", 500), ("1", 1000), (2, 2000), (0.25, 250), (" 250 m ", 250)],
)
def test_parse_cpu_values(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("text", ["0", "0m", "0.5m", "0.0001"])
def test_parse_cpu_below_one_millicore(text):
    with pytest.raises(ValueError, match="must be at least 1m"):
        parse_cpu(text)


@pytest.mark.parametrize("text", ["100 millicores", "-1", "m", "1.5cores"])
def test_parse_cpu_malformed(text):
    with pytest.raises(ValueError, match="invalid CPU"):
        parse_cpu(text)


@pytest.mark.parametrize("value", [False, None, {"cpu": 1}])
def test_parse_cpu_wrong_type(value):
    with pytest.raises(ValueError, match="expected millicores"):
        parse_cpu(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("30", 30.0), (3, 3.0), (0.25, 0.25), ("1.5s", 1.5)],
)
def test_parse_duration_units(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["5h", "five seconds", "-1s", "s"])
def test_parse_duration_malformed(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "0ms", 0])
def test_parse_duration_zero_rejected(text):
    with pytest.raises(ValueError, match="must be above zero"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, None])
def test_parse_duration_wrong_type(value):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (25 * 10**6, "25MB"),
        (1_500_000_000, "1.5GB"),
        (512 * 10**3, "512KB"),
        (999, "999B"),
        (64 * 2**20, "67.1MB"),
        (250 * 10**6 + 1, "250MB"),
    ],
)
def test_format_memory_largest_unit(size, expected):
    assert format_memory(size) == expected


def test_format_memory_parses_back():
    assert parse_memory(format_memory(50 * 10**6)) == 50 * 10**6


def test_format_cpu_rounds_millicores():
    assert format_cpu(249.6) == "250m"
