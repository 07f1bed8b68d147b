"""
``throttlekit run --cpu``: the whole process tree is capped by default, by a cgroup where
one may be made (kernel-enforced) or by signals, and the cgroup never outlives the run.

Real processes, real time, every wait bounded. CPU shares are asserted with generous
bounds (a tree capped at 30% must stay under 60%; uncapped it uses about 100%), never
durations. The cgroup tests need a cgroup this process may write (root, or a delegated
v2 subtree with the cpu controller) and skip, saying why, where there is none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import throttlekit._cli._run as runcmd
import throttlekit._throttle._cpu as cpu_module
from _procs import WAIT, state, wait_until
from throttlekit import ConfigError, ProcessControlError
from throttlekit._cli._run import _check, _Privileges, check_run_options, run_command
from throttlekit._throttle._cpu import (
    CgroupPlace,
    CpuCgroup,
    _cgroup_quota,
    _find_cgroup_place,
    cgroup_place,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

PLACE = cgroup_place()
needs_cgroup = pytest.mark.skipif(
    not isinstance(PLACE, CgroupPlace),
    reason=f"no cgroup with a CPU quota may be made here: {PLACE}",
)
ROOT = _Privileges(nice=0, rlimit_nice=40, capabilities=None)
FAKE_PLACE = CgroupPlace(version=2, parent=Path("/nowhere"), origin=Path("/nowhere"))

# The command under test: a parent that forks a busy child and waits for it; it prints the
# child's CPU seconds and the wall seconds it ran (the child stops at a wall deadline).
TREE = """
import os, sys, time
seconds = float(sys.argv[1])
start = time.monotonic()
pid = os.fork()
if pid == 0:
    while time.monotonic() - start < seconds:
        pass
    os._exit(0)
os.waitpid(pid, 0)
t = os.times()
print(t.children_user + t.children_system, time.monotonic() - start)
"""
# run_command in a fresh interpreter: ``python -c LAUNCH KWARGS-AS-REPR COMMAND...``
LAUNCH = (
    "import sys; from throttlekit._cli._run import run_command; "
    "sys.exit(run_command(sys.argv[2:], **eval(sys.argv[1])))"
)


def launch(command: list[str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, repr(kwargs), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C is sent to that group only
    )


def finish(run: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait (bounded) for a launched run; on a timeout kill the run's whole group."""
    try:
        out, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # our own session, started by launch()
        out, err = run.communicate(timeout=WAIT)
        pytest.fail(f"the run did not end: {err}")
    return run.returncode, out, err


def cgroup_in(err: str) -> Path:
    """The cgroup named by the verbose line."""
    for line in err.splitlines():
        if " in /" in line and "throttlekit-run-" in line:
            return Path(line.split(" in ", 1)[1].split(")", 1)[0])
    pytest.fail(f"no cgroup named on stderr: {err!r}")


def group_of(pid: int) -> str:
    """The name of the throttlekit cgroup ``pid`` is in, or ''."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if "throttlekit-run-" in line:
            return line.rsplit("/", 1)[1].strip()
    return ""


def our_cgroups(pid: int | None = None) -> list[Path]:
    """Cgroups made by throttlekit runs (of process ``pid`` only, if given: other test
    runs on the machine make and remove theirs meanwhile)."""
    assert isinstance(PLACE, CgroupPlace)
    owner = "" if pid is None else f"{pid}-"
    return sorted(PLACE.parent.glob(f"{cpu_module._CG_PREFIX}{owner}*"))


# -- the whole tree, by default --------------------------------------------------------------

BACKEND_PARAMS = [
    pytest.param("signals", id="signals"),
    pytest.param("cgroup", id="cgroup", marks=needs_cgroup),
]


@linux_only
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_the_whole_tree_is_capped_by_default(backend: str) -> None:
    """
    At --cpu 30, a parent that idles while its busy child works: the tree stays well under
    60% of one core (it used about 100% when only the command itself was capped).
    """
    run = launch([sys.executable, "-c", TREE, "2"], cpu=30, backend=backend, verbose=True)
    status, out, err = finish(run)
    assert status == 0, err
    cpu, wall = map(float, out.split())
    assert cpu / wall < 0.6, (cpu, wall, err)
    assert "for the whole process tree" in err


def test_no_children_caps_the_command_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """children=False: signals (a cgroup would cap the children), and only the command."""
    calls: list[bool] = []

    async def throttle(process: object, percent: float, *, include_children: bool) -> None:
        calls.append(include_children)

    monkeypatch.setattr(runcmd, "throttle_process", throttle)
    assert run_command(["true"], cpu=30, children=False) == 0
    assert calls == [False]
    assert run_command(["true"], cpu=30, backend="signals") == 0
    assert calls == [False, True]


# -- which backend, and why ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "children", "backend", "place", "chosen", "why"),
    [
        (30.0, True, "auto", FAKE_PLACE, "cgroup", "auto: a cgroup may be made here"),
        (30.0, True, "auto", "no cgroup here", "signals", "auto: no cgroup (no cgroup here)"),
        (30.0, True, "cgroup", FAKE_PLACE, "cgroup", "--backend cgroup"),
        (30.0, True, "signals", FAKE_PLACE, "signals", "--backend signals"),
        (30.0, False, "auto", FAKE_PLACE, "signals", "--no-children: a cgroup would cap"),
        (0.05, True, "auto", FAKE_PLACE, "signals", "cannot go below 0.1% of one core"),
        (None, True, "auto", FAKE_PLACE, None, ""),
    ],
)
def test_the_backend_chosen_and_why(
    cpu: float | None,
    children: bool,
    backend: str,
    place: CgroupPlace | str,
    chosen: str | None,
    why: str,
) -> None:
    options = _check(
        ["true"], cpu, None, None, ROOT, 2.0, children=children, backend=backend,
        find_place=lambda: place,
    )  # fmt: skip
    assert options.backend == chosen
    assert why in options.why
    assert (options.place is not None) == (chosen == "cgroup")
    line = runcmd.describe_cap(options)
    assert (options.why in line) if cpu is not None else line == "no --cpu: no CPU cap"


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"backend": "kernel"}, ConfigError, "invalid --backend 'kernel': auto, cgroup or"),
        ({"backend": 1}, TypeError, "backend must be a string, got int"),
        ({"backend": None}, TypeError, "backend must be a string, got NoneType"),
        ({"children": "yes"}, TypeError, "children must be True or False"),
        ({"children": 1}, TypeError, "children must be True or False"),
        ({"cpu": None, "backend": "cgroup"}, ConfigError, "--backend cgroup needs --cpu"),
        ({"cpu": None, "backend": "signals"}, ConfigError, "--backend signals needs --cpu"),
        ({"backend": "cgroup", "children": False}, ConfigError, "--no-children needs --backend"),
        ({"backend": "cgroup", "place": "v2 says no"}, ConfigError, "not available here: v2"),
        ({"backend": "cgroup", "cpu": 0.01}, ConfigError, "cannot go below 0.1%"),
    ],
)
def test_bad_backend_options_are_refused(
    kwargs: dict[str, object], error: type[Exception], fragment: str
) -> None:
    place = kwargs.pop("place", FAKE_PLACE)
    options: dict[str, object] = {"cpu": 30.0, **kwargs}
    cpu = options.pop("cpu")
    with pytest.raises(error, match=fragment):
        _check(["true"], cpu, None, None, ROOT, 2.0, find_place=lambda: place, **options)


def test_verbose_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="verbose must be True or False"):
        run_command(["true"], verbose=1)  # type: ignore[arg-type]


def test_a_forced_cgroup_where_none_may_be_made_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runcmd, "cgroup_place", lambda: "cgroup v2: not delegated")
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError, match="--backend cgroup is not available here: cgroup v2"):
        run_command(["touch", str(marker)], cpu=30, backend="cgroup")
    assert not marker.exists()
    assert check_run_options(["true"], cpu=30).backend == "signals"


# -- where a cgroup may be made (fake hierarchies) --------------------------------------------


def fake_v2(tmp_path: Path, enabled: dict[str, str]) -> Path:
    """A cgroup v2 tree: each relative path gets its cgroup.subtree_control text."""
    top = tmp_path / "unified"
    for rel, controls in enabled.items():
        directory = top / rel
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.subtree_control").write_text(controls)
        (directory / "cgroup.procs").write_text("")
    return top


def test_v2_own_cgroup_when_it_enables_cpu(tmp_path: Path) -> None:
    top = fake_v2(tmp_path, {"": "cpu io memory\n", "job": "cpu\n"})
    mountinfo = f"41 31 0:38 / {top} rw,relatime - cgroup2 cgroup2 rw\n"
    place = _find_cgroup_place(mountinfo, "0::/job\n")
    assert place == CgroupPlace(version=2, parent=top / "job", origin=top / "job")


def test_v2_nearest_parent_that_enables_cpu(tmp_path: Path) -> None:
    """Its own cgroup holds processes (no controllers for children): the nearest parent."""
    top = fake_v2(tmp_path, {"": "cpu\n", "user.slice": "cpu memory\n", "user.slice/s.scope": ""})
    mountinfo = f"41 31 0:38 / {top} rw - cgroup2 cgroup2 rw,nsdelegate\n"
    place = _find_cgroup_place(mountinfo, "0::/user.slice/s.scope\n")
    assert isinstance(place, CgroupPlace)
    assert (place.parent, place.origin) == (top / "user.slice", top / "user.slice/s.scope")


def test_v2_without_the_cpu_controller_says_why(tmp_path: Path) -> None:
    top = fake_v2(tmp_path, {"": "memory\n", "a": ""})
    mountinfo = f"41 31 0:38 / {top} rw - cgroup2 cgroup2 rw\n"
    reason = _find_cgroup_place(mountinfo, "0::/a\n")
    assert isinstance(reason, str)
    assert "cgroup v2: the cpu controller is not enabled for the children of" in reason


def test_v1_cpu_hierarchy_and_a_container_mount_root(tmp_path: Path) -> None:
    """v1: its own cgroup; a mount whose root is a sub-cgroup (a container) maps paths."""
    point = tmp_path / "cpu,cpuacct"
    (point / "inner").mkdir(parents=True)
    mountinfo = (
        f"41 31 0:38 / {tmp_path}/unified rw - cgroup2 cgroup2 rw\n"
        f"32 31 0:29 /docker/abc {point} rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    place = _find_cgroup_place(mountinfo, "4:cpu,cpuacct:/docker/abc/inner\n0::/\n")
    assert place == CgroupPlace(version=1, parent=point / "inner", origin=point / "inner")
    elsewhere = _find_cgroup_place(mountinfo, "4:cpu,cpuacct:/other\n")
    assert elsewhere == "cgroup v1: this process's cpu cgroup is not mounted here"


def test_cgroups_this_process_may_not_write_are_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not root and not delegated: the parent that enables cpu is not writable either."""
    top = fake_v2(tmp_path, {"": "cpu\n", "a": "cpu\n", "a/b": ""})
    # its own cgroup, and the top's cgroup.procs but not the top itself (no mkdir there)
    writable = {top / "a" / "b", top / "a" / "b" / "cgroup.procs", top / "cgroup.procs"}
    monkeypatch.setattr(cpu_module.os, "access", lambda path, mode: Path(path) in writable)
    mountinfo = f"41 31 0:38 / {top} rw - cgroup2 cgroup2 rw\n"
    reason = _find_cgroup_place(mountinfo, "0::/a/b\n")
    assert isinstance(reason, str)
    assert "or of a parent this process may write to" in reason
    writable |= {top / "a", top / "a" / "cgroup.procs"}
    assert _find_cgroup_place(mountinfo, "0::/a/b\n") == CgroupPlace(
        version=2, parent=top / "a", origin=top / "a" / "b"
    )
    point = tmp_path / "cpu"
    point.mkdir()
    v1 = f"32 31 0:29 / {point} rw - cgroup cgroup rw,cpu\n"
    assert (
        _find_cgroup_place(v1, "1:cpu:/\n") == f"cgroup v1: this process may not write to {point}"
    )


def test_mount_points_with_spaces_and_no_cgroups() -> None:
    mountinfo = r"32 31 0:29 / /sys/fs/cg\040x rw - cgroup cgroup rw,cpu" + "\n"
    assert cpu_module._cgroup_mounts(mountinfo) == (None, ("/", "/sys/fs/cg x"))
    reason = _find_cgroup_place("22 27 0:21 / /proc rw - proc proc rw\n", "0::/\n")
    assert reason == "no cgroup hierarchy with the cpu controller is mounted"


@pytest.mark.parametrize(
    ("percent", "quota", "period"),
    [
        (30, 30_000, 100_000),
        (250, 250_000, 100_000),
        (1, 1_000, 100_000),
        (0.5, 1_000, 200_000),
        (0.1, 1_000, 1_000_000),
        (0.3, 1_000, 333_334),
    ],
)
def test_cgroup_quota(percent: float, quota: int, period: int) -> None:
    """The kernel takes quotas of 1 ms or more and periods of at most 1 s."""
    assert _cgroup_quota(percent) == (quota, period)
    assert quota / period <= percent / 100 * 1.00001


def test_cgroup_quota_below_the_kernels_least() -> None:
    with pytest.raises(ValueError, match=r"percent must be at least 0\.1 for a cgroup quota"):
        _cgroup_quota(0.09)


def test_a_v2_cgroup_writes_cpu_max(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fake v2 tree: cpu.max as the kernel spells it, the name says whose it is."""
    top = fake_v2(tmp_path, {"": "cpu\n"})
    mkdir = os.mkdir

    def make_cgroup(path: Path) -> None:  # as the kernel does: with its files
        mkdir(path)
        (path / "cgroup.procs").write_text("")

    monkeypatch.setattr(cpu_module.os, "mkdir", make_cgroup)
    group = CpuCgroup(CgroupPlace(version=2, parent=top, origin=top), 45)
    try:
        assert (group.path / "cpu.max").read_text() == "45000 100000\n"
        assert group.path.name.startswith(f"throttlekit-run-{os.getpid()}-")
        assert "cgroup v2 cpu.max 45000 100000 in" in group.describe()
    finally:
        os.close(group._procs)


def test_stale_empty_cgroups_of_dead_runs_are_swept(tmp_path: Path) -> None:
    gone = tmp_path / "throttlekit-run-999999999-abcdef"  # above any pid_max
    alive = tmp_path / f"throttlekit-run-{os.getpid()}-abcdef"
    other = tmp_path / "someone-else"
    for directory in (gone, alive, other):
        directory.mkdir()
    cpu_module._sweep_stale(tmp_path)
    assert not gone.exists()
    assert alive.exists()
    assert other.exists()


# -- the cgroup on this machine: made, used, removed on every way out ------------------------


@linux_only
@needs_cgroup
def test_the_command_and_its_children_are_born_in_the_cgroup() -> None:
    script = "cat /proc/self/cgroup; sh -c 'cat /proc/self/cgroup'"
    run = launch(["sh", "-c", script], cpu=40, backend="cgroup", verbose=True)
    status, out, err = finish(run)
    assert status == 0, err
    group = cgroup_in(err)
    assert out.count(group.name) == 2  # the command and its child
    assert not group.exists()
    assert "by the kernel (cgroup v" in err


@linux_only
@needs_cgroup
def test_the_cgroup_is_removed_when_the_command_cannot_start() -> None:
    before = our_cgroups(os.getpid())
    assert run_command(["no-such-command-here"], cpu=30, backend="cgroup") == 127
    assert our_cgroups(os.getpid()) == before


@linux_only
@needs_cgroup
def test_ctrl_c_ends_the_command_and_removes_the_cgroup() -> None:
    run = launch(["sh", "-c", "echo $$; while :; do :; done"], cpu=20, verbose=True)
    try:
        assert run.stdout is not None
        command = int(run.stdout.readline())
        wait_until(lambda: group_of(command) != "", "the command in its cgroup")
        group = group_of(command)
        os.killpg(run.pid, signal.SIGINT)  # the terminal's Ctrl-C, to our session only
        status, _, err = finish(run)
        assert status == 128 + signal.SIGINT, err
        assert group not in [p.name for p in our_cgroups()]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(WAIT)


@linux_only
@needs_cgroup
def test_a_background_process_left_behind_leaves_the_cgroup() -> None:
    """It is moved back to our own cgroup (the cap lasts as long as the command)."""
    run = launch(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], cpu=30, verbose=True)
    status, out, err = finish(run)
    left = int(out)
    try:
        assert status == 0, err
        assert state(left) not in ("gone", "Z")
        assert "throttlekit-run-" not in Path(f"/proc/{left}/cgroup").read_text()
        assert not cgroup_in(err).exists()
    finally:
        os.kill(left, signal.SIGKILL)


@linux_only
@needs_cgroup
def test_sigkill_of_throttlekit_leaves_the_command_capped_never_stopped() -> None:
    """
    The command runs on in its cgroup, capped and never stopped; once it has ended, the
    next run removes the empty cgroup.
    """
    run = launch(["sh", "-c", "echo $$; while :; do :; done"], cpu=10, verbose=True)
    try:
        assert run.stdout is not None
        command = int(run.stdout.readline())
        wait_until(lambda: group_of(command) != "", "the command in its cgroup")
        group = group_of(command)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(WAIT)
        for _ in range(50):
            assert state(command) != "T"
            time.sleep(0.01)
        assert group_of(command) == group  # still capped
        assert group in [p.name for p in our_cgroups()]
        os.kill(command, signal.SIGKILL)
        wait_until(lambda: state(command) == "gone", "the command gone")
        # Now empty: the next run removes it (or one that other tests start meanwhile).
        status, _, err = finish(launch(["true"], cpu=30, backend="cgroup"))
        assert status == 0, err
        assert group not in [p.name for p in our_cgroups()]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # the session we started: what is left of it
        run.communicate(timeout=WAIT)


@linux_only
@needs_cgroup
@pytest.mark.parametrize("backend", ["auto", "cgroup"])
def test_a_command_that_cannot_join_the_cgroup(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], backend: str
) -> None:
    """Forced: an error, nothing runs. auto: signals instead, and -v says why."""

    def refuse(self: CpuCgroup) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(CpuCgroup, "join_in_child", refuse)
    before = our_cgroups(os.getpid())
    if backend == "cgroup":
        with pytest.raises(ProcessControlError, match=r"cannot move sh into .*: Permission denied"):
            run_command(["sh", "-c", "exit 4"], cpu=30, backend=backend)
    else:
        assert run_command(["sh", "-c", "exit 4"], cpu=30, verbose=True) == 4
        err = capfd.readouterr().err
        assert "by stopping and continuing" in err
        assert "auto: no cgroup (cannot move sh into" in err
    assert our_cgroups(os.getpid()) == before


@linux_only
@pytest.mark.parametrize("backend", ["auto", "cgroup"])
def test_a_cgroup_that_cannot_be_made(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], backend: str
) -> None:
    """mkdir refused: forced, an error before anything runs; auto, signals and a notice."""
    nowhere = CgroupPlace(version=2, parent=Path("/proc/no-such-dir"), origin=Path("/"))
    monkeypatch.setattr(runcmd, "cgroup_place", lambda: nowhere)
    if backend == "cgroup":
        with pytest.raises(ProcessControlError, match="cannot make a cgroup in /proc/no-such"):
            run_command(["sh", "-c", "exit 4"], cpu=30, backend=backend)
    else:
        assert run_command(["sh", "-c", "exit 4"], cpu=30, verbose=True) == 4
        assert "auto: no cgroup (cannot make a cgroup in" in capfd.readouterr().err
