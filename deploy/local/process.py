"""Process plumbing shared by every component of the local stack.

Detached start (own session / process group, output appended to a log file), pid files that
survive the controller, liveness that is not fooled by a recycled pid, graceful stop (SIGTERM to
the whole group, SIGKILL after a timeout), RSS and CPU accounting from ``/proc``, port checks, waiting
for readiness, and small helpers for writing generated files.  Linux only (reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import re
import signal
import socket
import string
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.files import write_text_atomic

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"
"""Config templates (``string.Template`` syntax: ``${name}``)."""

START_MARKER = "===="
"""Prefix of the line written into a component's log before each start."""

# Popen objects of the processes this interpreter started, kept so that they are reaped (no
# zombies while the controller lives, e.g. in tests) and not garbage-collected with a warning.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}


class StackError(RuntimeError):
    """A component could not be installed, configured, started or stopped."""


class PortInUseError(StackError):
    """A port that a component needs is already bound by some other process."""


# ---- pid files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: the pid and the process start time (guards against pid reuse)."""

    pid: int
    start_ticks: int
    argv0: str = ""

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(int(data["pid"]), int(data["start_ticks"]), str(data.get("argv0", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        write_text_atomic(
            path, json.dumps({"pid": self.pid, "start_ticks": self.start_ticks, "argv0": self.argv0}) + "\n"
        )


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        _EXIT_CODES[pid] = proc.returncode
        _CHILDREN.pop(pid, None)


def is_alive(record: PidRecord | None) -> bool:
    """True when the recorded process still runs (same start time, not a zombie)."""
    if record is None:
        return False
    _reap(record.pid)
    fields = _stat_fields(record.pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    return int(fields[19]) == record.start_ticks


def read_live_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` when that process is alive, else None."""
    record = PidRecord.read(pid_file)
    return record.pid if record is not None and is_alive(record) else None


# ---- start / stop ------------------------------------------------------------------------


def start_detached(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> PidRecord:
    """Start ``argv`` in a new session with output appended to ``log_file``; write ``pid_file``.

    The process is the leader of its own process group (so :func:`stop` reaches its children)
    and keeps running when the caller exits.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab", buffering=0) as out:
        out.write(f"\n{START_MARKER} {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"cannot execute {argv[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    ticks = start_ticks(proc.pid)
    record = PidRecord(proc.pid, ticks if ticks is not None else -1, os.path.basename(argv[0]))
    record.write(pid_file)
    return record


def exit_code(pid: int) -> int | None:
    """Exit status of a process this interpreter started and that has ended, else None."""
    _reap(pid)
    return _EXIT_CODES.get(pid)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    _reap(pgid)
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))  # members may all be zombies awaiting their reaper


def stop(pid_file: Path, *, name: str, timeout_s: float = 20.0) -> bool:
    """Stop the process group recorded in ``pid_file``: SIGTERM, wait, then SIGKILL.

    Returns True when something was running.  The pid file is removed in every case.
    """
    record = PidRecord.read(pid_file)
    # The group outlives a crashed leader (e.g. Triton's stubs); its pgid cannot be recycled
    # while a member lives, so signalling it never hits an unrelated process.
    if record is None or not (is_alive(record) or group_members(record.pid)):
        pid_file.unlink(missing_ok=True)
        return False
    pgid = record.pid  # leader of its own session, see start_detached
    log.info("stopping %s", name, extra={"component": name, "pid": record.pid})
    t0 = time.monotonic()
    _signal_group(pgid, signal.SIGTERM)
    deadline = t0 + timeout_s
    while time.monotonic() < deadline and (is_alive(record) or _group_alive(pgid)):
        time.sleep(0.1)
    if is_alive(record) or _group_alive(pgid):
        log.warning("%s ignored SIGTERM for %.0fs: SIGKILL", name, timeout_s, extra={"component": name})
        _signal_group(pgid, signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while time.monotonic() < kill_deadline and (is_alive(record) or _group_alive(pgid)):
            time.sleep(0.05)
    _reap(record.pid)
    pid_file.unlink(missing_ok=True)
    log.info(
        "stopped %s in %.1fs",
        name,
        time.monotonic() - t0,
        extra={"component": name, "elapsed_s": round(time.monotonic() - t0, 2)},
    )
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# ---- memory ------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (children, grandchildren, ...)."""
    tree = _children_map()
    out: list[int] = []
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(tree.get(child, []))
    return out


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) ``pid`` has used so far, in seconds; None when it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS if fields else None


def command_line(pid: int) -> list[str]:
    """``/proc/<pid>/cmdline`` as a list ([] when the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def rss_mb(pid: int, include_children: bool = True) -> float | None:
    """Resident memory (``VmRSS``) of ``pid`` and, optionally, all its descendants, in MB."""
    total_kb = 0
    found = False
    for p in [pid, *(descendants(pid) if include_children else [])]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    found = True
                    break
        except OSError:
            continue
    return round(total_kb / 1024, 1) if found else None


def memory_mb(pid: int) -> dict[str, float] | None:
    """``rss``, ``pss`` and ``uss`` of one process in MB (``/proc/<pid>/smaps_rollup``). RSS counts
    every shared page in full (torch's libraries in each of four stubs); PSS shares them out, so
    the PSS of a set of processes adds up to the memory they take; USS is the process's alone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        key, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            kb[key] = int(rest.split()[0])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {
        "rss": round(kb.get("Rss", 0) / 1024, 1),
        "pss": round(kb.get("Pss", 0) / 1024, 1),
        "uss": round(uss / 1024, 1),
    }


# ---- ports -------------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (TIME_WAIT sockets do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
"""Where Linux keeps the range it draws the local ports of outgoing connections from."""

LOWEST_PICKED_PORT = 20000
"""The lowest port :func:`free_port` hands out (below it lie the usual fixed service ports)."""

_HANDED_OUT: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux default 32768-60999)."""
    try:
        low, high = (int(x) for x in EPHEMERAL_RANGE_FILE.read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A port nothing listens on now, for a server that starts later.

    The port lies below the kernel's ephemeral range, so no outgoing connection of another
    process (a Kafka or Redis client, say) can take it as its local port between this pick and the
    server's bind; that race once failed CI: a port the kernel picked with ``bind(0)`` came from
    the ephemeral range, and minutes later, when Triton started, a client connection held it.
    A port is handed out once per process, so the components of one stack never share one; a
    race with another process that picks ports the same way is left (random picks in about
    12,000 ports).
    """
    rng = rng or random.SystemRandom()
    low = LOWEST_PICKED_PORT
    high = ephemeral_port_range()[0] - 1
    if high - low < 1000:  # a machine whose ephemeral range starts low: take the kernel's pick
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = rng.randint(low, high)
        if port not in _HANDED_OUT and port_is_free(host, port):
            _HANDED_OUT.add(port)
            return port
    raise PortInUseError(f"no free port on {host} in {low}-{high} after 1000 tries")


def accepts_connections(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` can be opened (a cheap pre-check only)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_ports_free(name: str, host: str, ports: Mapping[str, int]) -> None:
    """Raise :class:`PortInUseError` naming the component and port when one is taken."""
    taken = [f"{label} port {port}" for label, port in ports.items() if not port_is_free(host, port)]
    if taken:
        raise PortInUseError(
            f"{name}: {', '.join(taken)} on {host} already in use by another process "
            f"(another stack? choose other ports via EMOTION_* settings)"
        )


# ---- waiting -----------------------------------------------------------------------------


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ("" when missing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wait_ready(
    name: str,
    check: Callable[[], bool],
    *,
    timeout_s: float,
    record: PidRecord | None,
    log_file: Path,
    interval_s: float = 0.25,
) -> float:
    """Poll ``check`` until it returns True; returns the seconds waited.

    Fails fast when the process (``record``) dies, and on timeout; both errors carry the last
    lines of the component's log.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            if check():
                return time.monotonic() - t0
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - any failure of the probe means "not ready yet"
            last_exc = exc
        if record is not None and not is_alive(record):
            code = exit_code(record.pid)
            reason = f"exited with code {code}" if code is not None else "exited"
            raise StackError(_failure(name, f"process {record.pid} {reason} before it became ready", log_file))
        if time.monotonic() >= deadline:
            detail = f" (last probe error: {last_exc!r})" if last_exc else ""
            raise StackError(_failure(name, f"not ready after {timeout_s:.0f}s{detail}", log_file))
        time.sleep(interval_s)


_ERROR_LINE = re.compile(r"^E\d{4} |\b(ERROR|FATAL|Error|Exception|Traceback|failed)\b")


def _failure(name: str, what: str, log_file: Path, lines: int = 30) -> str:
    """Error text for a component that did not come up: error-looking lines, then the log's tail."""
    text = tail(log_file, 400).splitlines()
    starts = [i for i, ln in enumerate(text) if ln.startswith(START_MARKER)]
    text = text[starts[-1] :] if starts else text  # this start only
    recent = text[-lines:]
    errors = [ln[:500] for ln in text[:-lines] if _ERROR_LINE.search(ln)][-10:]
    parts = [f"{name}: {what}"]
    if errors:
        parts += [f"---- earlier error lines of {log_file} ----", *errors]
    parts += [f"---- last {len(recent)} lines of {log_file} ----", *recent, "----"]
    return "\n".join(parts)


def run_checked(argv: Sequence[str], *, what: str, env: Mapping[str, str] | None = None, timeout_s: float = 600) -> str:
    """Run a short command to completion; raise :class:`StackError` with its output on failure."""
    try:
        done = subprocess.run(
            list(argv),
            check=False,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise StackError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


# ---- generated files ---------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (serialises installers of a shared home)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def render_template(name: str, values: Mapping[str, object]) -> str:
    """Fill ``templates/<name>`` (``${key}`` placeholders; a missing key is an error)."""
    text = (TEMPLATES / name).read_text()
    return string.Template(text).substitute({k: str(v) for k, v in values.items()})
