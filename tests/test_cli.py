"""The throttlekit command line: validate, resolve and demo."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from throttlekit import RateLimiter
from throttlekit._cli import main
from throttlekit._pipe import copy, human_bytes, parse_burst

SAMPLE_DIR = Path(__file__).parent.parent / "src" / "throttlekit" / "data"
CONFIGMAP = str(SAMPLE_DIR / "sample-node-agent-configmap.json")
NODES = str(SAMPLE_DIR / "sample-nodes.json")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def write(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_validate_usable_config(capsys: pytest.CaptureFixture[str]) -> None:
    """A good ConfigMap validates with exit 0 and a summary."""
    status, out, _ = run(capsys, "validate", CONFIGMAP)
    assert status == 0
    assert "usable (global number 2, 4 rules, 0 skipped)" in out


def test_validate_lists_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unusable config prints each problem with its path and exits 1."""
    cfg = write(
        tmp_path, {"loadConcurrency": {"globalConfig": "2", "perNodeConfig": [{"number": 1.5}]}}
    )
    status, out, _ = run(capsys, "validate", cfg)
    assert status == 1
    assert "not usable, 2 problems" in out
    assert "loadConcurrency.globalConfig: expected an integer" in out
    assert "loadConcurrency.perNodeConfig[0].number: expected an integer" in out


def test_validate_warnings_pass_lenient_and_fail_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Warnings are printed with exit 0; --strict makes them problems with exit 1."""
    cfg = write(tmp_path, {"loadConcurrency": {"globalConfig": 0}})
    status, out, _ = run(capsys, "validate", cfg)
    assert status == 0
    assert "warning: loadConcurrency.globalConfig: global number 0 is invalid" in out
    status, out, _ = run(capsys, "validate", "--strict", cfg)
    assert status == 1
    assert "loadConcurrency.globalConfig" in out


def test_resolve_nodes_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """--nodes resolves every node of `kubectl get nodes -o json` output, one row each."""
    status, out, _ = run(capsys, "resolve", CONFIGMAP, "--nodes", NODES)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "CONCURRENCY", "SOURCE", "WHY"]
    rows = {line.split()[0]: line.split()[1:3] for line in lines[1:]}
    assert rows == {
        "node1": ["3", "rule"],
        "node2": ["5", "rule"],
        "node3": ["8", "rule"],
        "node4": ["1", "rule"],
        "node5": ["2", "global"],
    }


def test_resolve_labels_with_explain(capsys: pytest.CaptureFixture[str]) -> None:
    """--labels resolves one node; --explain adds the full account."""
    status, out, _ = run(
        capsys, "resolve", CONFIGMAP, "--labels", "kubernetes.io/hostname=node1", "--explain"
    )
    assert status == 0
    assert "3 from rule 0 (kubernetes.io/hostname=node1): the only matching rule" in out


def test_resolve_json(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one record per node."""
    status, out, _ = run(capsys, "resolve", CONFIGMAP, "--nodes", NODES, "--json")
    assert status == 0
    records = json.loads(out)
    assert [(r["node"], r["value"], r["winner"]) for r in records][:2] == [
        ("node1", 3, 0),
        ("node2", 5, 1),
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["validate", "/nonexistent/cfg.json"], "cannot read /nonexistent/cfg.json"),
        (["resolve", CONFIGMAP, "--labels", "a=b c"], "--labels: label value 'b c'"),
        (["resolve", CONFIGMAP, "--labels", "novalue"], "--labels: 'novalue' is not key=value"),
        (["resolve", CONFIGMAP, "--labels", "a=1,a=2"], "given twice"),
        (
            ["resolve", CONFIGMAP, "--nodes", CONFIGMAP],
            "expected `kubectl get nodes -o json` output",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad input gives one clear line on stderr and exit status 2, never a traceback."""
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith("throttlekit: error: ")
    assert fragment in err


def test_resolve_with_unusable_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """resolve on a broken config names the first problem, points at validate, exits 1."""
    cfg = write(tmp_path, "{")
    status, _, err = run(capsys, "resolve", cfg, "--labels", "a=b")
    assert status == 1
    assert err.count("\n") == 1
    assert "not usable: not valid JSON" in err


def test_demo_runs_the_main_job(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo resolves concurrency, backs up the sample cluster and reports, errors included."""
    status, out, _ = run(capsys, "demo", "--scale", "0.02", "--site-rate", "400MiB/s")
    assert status == 0
    assert "node4  1            rule" in out
    assert "Report (measured in this run):" in out
    assert "Errors (1), none dropped" in out
    assert "One or more additional items for pvc/data-node2-app0-0 failed" in out
    assert "through the site limit), one at a time:" in out
    assert "3 problems:" in out
    assert "did you mean globalConfig?" in out


def test_demo_json_report_adds_up(capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one document whose per-node figures add up to the totals."""
    status, out, _ = run(
        capsys, "demo", "--json", "--scale", "0.02", "--site-rate", "400MiB/s", "--seed", "3"
    )
    assert status == 0
    report = json.loads(out)
    assert report["concurrency"] == {"node1": 3, "node2": 5, "node3": 8, "node4": 1, "node5": 2}
    assert [n["concurrency"] for n in report["nodes"]] == [3, 5, 8, 1, 2]
    # everything moved went through a node (backups) or straight through the site (restores)
    assert report["restore_bytes"] > 0
    assert (
        report["total_bytes"] == sum(n["bytes"] for n in report["nodes"]) + report["restore_bytes"]
    )
    assert report["error_count"] == 1
    assert sum(n["failed"] for n in report["nodes"]) == 1
    assert all(n["succeeded"] + n["failed"] + n["skipped"] == n["blocks"] for n in report["nodes"])
    assert report["site_limit_per_second"] == 400 * 2**20


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--scale", "0"], "--scale must be above 0"), (["--site-rate", "fast"], "invalid rate")],
)
def test_demo_bad_options(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    """Bad demo options are one error line."""
    status, _, err = run(capsys, "demo", *args)
    assert status == 2
    assert fragment in err


def test_python_dash_m_works() -> None:
    """`python -m throttlekit` runs the same command line."""
    proc = subprocess.run(
        [sys.executable, "-m", "throttlekit", "validate", CONFIGMAP],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usable" in proc.stdout


# -- pipe --------------------------------------------------------------------------------


def pipe(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "throttlekit", "pipe", *args]
    return subprocess.run(command, input=data, capture_output=True, check=False, timeout=60)


def test_pipe_copies_stdin_to_stdout_byte_for_byte() -> None:
    """`throttlekit pipe` passes every byte through unchanged, with no progress when piped."""
    data = bytes(range(256)) * 2000
    result = pipe("--rate", "1GiB/s", "--burst", "64KiB", data=data)
    assert result.returncode == 0
    assert result.stdout == data
    assert result.stderr == b""


def test_pipe_exits_cleanly_when_the_reader_goes_away() -> None:
    """A closed downstream pipe (`| head`) ends the copy with status 0 and no traceback."""
    command = f"{sys.executable} -m throttlekit pipe --rate off"
    script = f"yes | {command} | head -c 10; exit ${{PIPESTATUS[1]}}"
    result = subprocess.run(["bash", "-c", script], capture_output=True, check=False, timeout=60)
    assert result.returncode == 0
    assert result.stdout == b"y\ny\ny\ny\ny\n"
    assert result.stderr == b""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--rate", "10fast"], "invalid rate '10fast'"),
        (["--rate", "1M", "--burst", "1/s"], "invalid burst '1/s'"),
        (["--rate", "1M", "--burst", "lots"], "invalid burst 'lots'"),
    ],
)
def test_pipe_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    """A bad rate or burst is one error line and exit status 2."""
    status, _, err = run(capsys, "pipe", *args)
    assert status == 2
    assert err.startswith("throttlekit: error: ")
    assert fragment in err
    assert err.count("\n") == 1


def test_burst_accepts_sizes_and_durations() -> None:
    """--burst takes a size in any unit or a duration in s or ms."""
    assert parse_burst("64KiB") == 65536
    assert parse_burst("1MB") == 1e6
    assert parse_burst("250ms") == timedelta(milliseconds=250)
    assert parse_burst("0.5s") == timedelta(seconds=0.5)


def test_progress_line_shows_total_and_rates() -> None:
    """The progress display reports bytes copied and ends with a newline."""
    progress = io.StringIO()
    source, sink = io.BytesIO(b"x" * 300_000), io.BytesIO()
    total = copy(source, sink, RateLimiter("off"), progress)  # type: ignore[arg-type]
    assert total == 300_000
    assert sink.getvalue() == b"x" * 300_000
    line = progress.getvalue()
    assert "293KiB" in line
    assert "/s avg" in line
    assert line.endswith("\n")
    assert [human_bytes(n) for n in (5, 2048, 10 * 2**20)] == ["5B", "2KiB", "10MiB"]


# -- run -----------------------------------------------------------------------------------


def throttlekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "throttlekit", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux priorities")
def test_run_lowers_priority_and_passes_the_exit_status() -> None:
    """`throttlekit run` starts the command at the nice value and returns its status."""
    script = "import os, sys; print(os.nice(0)); sys.exit(3)"
    result = throttlekit("run", "--nice", "13", "--", sys.executable, "-c", script)
    assert result.returncode == 3
    assert result.stdout.strip() == "13"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_run_with_a_cpu_cap_ends_with_the_command() -> None:
    """With --cpu, the throttle stops when the command exits, and the status passes through."""
    result = throttlekit("run", "--cpu", "50", "--", sys.executable, "-c", "print('done')")
    assert (result.returncode, result.stdout.strip()) == (0, "done")


def test_run_reports_death_by_signal_as_128_plus_n() -> None:
    """A command killed by a signal gives 128 + the signal number, as shells do."""
    result = throttlekit("run", "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 128 + 15


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--", "no-such-command-here"], "command not found: no-such-command-here"),
        (["run", "--ionice", "fast", "--", "true"], "invalid --ionice 'fast'"),
        (["run", "--ionice", "idle:3", "--", "true"], "the idle class has no level"),
        (["run", "--cpu", "0", "--", "true"], "invalid --cpu 0.0"),
        (["run"], "no command given"),
    ],
)
def test_run_bad_input_is_one_line(args: list[str], fragment: str) -> None:
    """Bad options and missing commands are one error line and exit status 2."""
    result = throttlekit(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("throttlekit: error: ")
    assert fragment in result.stderr


@pytest.mark.parametrize("command", ["validate", "resolve", "pipe", "run", "demo"])
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """--help works for every command (argparse help texts are format strings)."""
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert "usage: throttlekit" in out
