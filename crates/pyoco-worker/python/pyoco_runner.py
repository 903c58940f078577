#!/usr/bin/env python3
"""pyoco_runner -- long-lived pyoco execution process for the Rust pyoco-worker.

The Rust worker starts ``python -u pyoco_runner.py`` once, keeps it warm and
sends it one run at a time.  Requests arrive on stdin and events leave on
stdout, one compact ASCII JSON object per line.  The exact protocol is
documented in PROTOCOL.md next to this file; keep both in sync.

Only the standard library and the real ``pyoco`` package (plus its own
dependency PyYAML) are used.  Python >= 3.10.

Design notes (details in PROTOCOL.md):

* stdout/stdin file descriptors are moved away at start-up: protocol lines go
  to a private duplicate of fd 1, fd 1 itself is pointed at fd 2 (so stray
  writes from C code or child processes end up in the log, never in the
  protocol) and fd 0 is replaced by /dev/null.
* ``sys.stdout``/``sys.stderr`` become thread-aware proxies that route text to
  the buffer of the task running on the writing thread (bounded per task).
* flow.yaml graphs are never ``exec``-ed: Python-expression graphs (the 0.5.1
  syntax) are parsed with ``ast`` and interpreted over a small whitelist of
  node types using pyoco's real DSL objects; anything that is not valid Python
  is handed to pyoco's own graph DSL parser (``build_flow_from_graph``), which
  is a hand-written lexer/parser.
* only tasks referenced by the graph are imported and added to the Flow.
* a cancel interrupts the run's running tasks: TaskCancelled (a
  BaseException) via PyThreadState_SetAsyncExc in pool threads and via
  SIGUSR1 in the main thread; time.sleep is replaced by a version that wakes
  on the run's cancel event; the run's child processes get SIGTERM.
* Linux: the spawned process stays a small guard (child subreaper) and forks
  the real runner; every process a task starts is killed at the end of its
  run, and by the guard when the runner dies or the guard is told to stop.
"""

from __future__ import annotations

import ast
import copy
import gc
import importlib
import importlib.util
import io
import json
import math
import operator
import os
import platform
import queue
import re
import signal
import sys
import textwrap
import threading
import time
import traceback
import types
from collections import OrderedDict

RUNNER_VERSION = "1.0.0"
PROTOCOL_VERSION = 1
DEFAULT_MAX_TASK_OUTPUT_BYTES = 64 * 1024
# A task's `output` or one of its `inputs` whose JSON would be larger than this is replaced
# by a marker in task records (PROTOCOL.md §3.3): the worker's run snapshot could never hold
# it, and a 300 MB result would otherwise cross the pipe (and the worker's memory) on every
# snapshot. The worker passes its PYOCO_MAX_RUN_SNAPSHOT_BYTES.
DEFAULT_MAX_RECORD_VALUE_BYTES = 256 * 1024
MAX_RECORD_VALUE_BYTES = DEFAULT_MAX_RECORD_VALUE_BYTES
MAX_REMEMBERED_CANCELS = 1024
# A full garbage collection after a run that left the process this much bigger than the last
# one did (Server.release_run_memory).
GC_AFTER_GROWTH_BYTES = 32 * 1024 * 1024
MAX_GRAPH_AST_NODES = 20000
TRUNCATION_MARKER = "\u2026[truncated %d bytes]"
# Live task log (PROTOCOL.md §5.1): lines go out in `log` events, batched.
DEFAULT_LOG_MAX_BYTES_PER_RUN = 8 * 1024 * 1024
LOG_MAX_LINE_BYTES = 16 * 1024
LOG_LINE_CUT_MARKER = "\u2026[line cut at %d bytes]"
LOG_FLUSH_SEC = 0.02
LOG_FLUSH_BYTES = 64 * 1024

# Error kinds reported in run_finished.error_kind
EK_INVALID_REQUEST = "invalid_request"
EK_INVALID_WORKFLOW = "invalid_workflow"
EK_UNKNOWN_TASK = "unknown_task"
EK_IMPORT_ERROR = "import_error"
EK_FLOW_NOT_FOUND = "flow_not_found"
EK_RESOLVER_ERROR = "resolver_error"
EK_EXECUTION_ERROR = "execution_error"
EK_INTERNAL_ERROR = "internal_error"


# ---------------------------------------------------------------------------
# JSON helpers
# ---------------------------------------------------------------------------

def _fix_str(s):
    """Strings must be encodable as UTF-8 (lone surrogates are not)."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_repr(value):
    try:
        return _fix_str(repr(value))
    except Exception as exc:  # a broken __repr__ must not break the runner
        return "<unrepresentable %s: %s>" % (type(value).__name__, type(exc).__name__)


def _json_key(key):
    if isinstance(key, str):
        return _fix_str(key)
    if key is None:
        return "null"
    if key is True:
        return "true"
    if key is False:
        return "false"
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float) and math.isfinite(key):
        return repr(float(key))
    return _safe_repr(key)


def _jsonable(value, _depth=0):
    """Deep copy of ``value`` that strict JSON readers (serde_json) accept.

    Non-finite floats become their repr ('nan', 'inf'), unknown objects their
    repr(), strings are made UTF-8 safe.
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _fix_str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(float(value))
    if _depth > 100:
        return _safe_repr(value)
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v, _depth + 1) for k, v in list(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, _depth + 1) for v in list(value)]
    return _safe_repr(value)


def _json_size_over(value, limit, _depth=0):
    """About how many bytes `value` takes as compact JSON, or limit + 1 as soon as it is
    known to be more than `limit` (so a huge value costs at most `limit` steps)."""
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, (int, float)):
        return 24
    if _depth > 100:
        return 64
    total = 2
    if isinstance(value, dict):
        items = list(value.items())
        for k, v in items:
            total += (len(k) if isinstance(k, str) else 24) + 4
            if total > limit:
                return limit + 1
            total += _json_size_over(v, limit - total, _depth + 1)
            if total > limit:
                return limit + 1
        return total
    if isinstance(value, (list, tuple)):
        for v in list(value):
            total += 1 + _json_size_over(v, limit - total, _depth + 1)
            if total > limit:
                return limit + 1
        return total
    return 64  # a repr, bounded by _safe_repr


def _bounded_value(value, what):
    """`value`, or a marker string when its JSON is over MAX_RECORD_VALUE_BYTES."""
    limit = MAX_RECORD_VALUE_BYTES
    if limit <= 0:
        return value
    size = _json_size_over(value, limit)
    if size <= limit:
        return value
    if isinstance(value, str):
        amount = "%d bytes" % (len(value) + 2)
    else:
        amount = "more than %d bytes" % limit
    return "\u2026[%s omitted: %s as JSON, over the run snapshot limit of %d bytes]" % (what, amount, limit)


def bound_task_record(rec):
    """Replace the `output` and `inputs` values of a serialised task record that are too big."""
    if "output" in rec:
        rec["output"] = _jsonable(_bounded_value(rec["output"], "output"))
    inputs = rec.get("inputs")
    if isinstance(inputs, dict):
        rec["inputs"] = inputs = {_json_key(k): v for k, v in inputs.items()}
        for k in list(inputs):
            inputs[k] = _jsonable(_bounded_value(inputs[k], "input %s" % k))
    if rec.get("artifacts"):
        rec["artifacts"] = _jsonable(rec["artifacts"])
    return rec


def _pyoco_safe_value(value):
    """pyoco's RunContext._safe_value (0.8): a value JSON cannot hold becomes its repr."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        json.dumps(value)
        return value
    except Exception:
        return _safe_repr(value)


MAX_TASK_EDGES = 5000


def task_edges(flow):
    """The flow's dependencies as sorted [upstream, downstream] name pairs (what the dashboard
    draws), or None for a flow with more than MAX_TASK_EDGES of them."""
    edges = set()
    try:
        for t in list(flow.tasks):
            for dep in list(getattr(t, "dependencies", ()) or ()):
                edges.add((str(dep.name), str(t.name)))
                if len(edges) > MAX_TASK_EDGES:
                    return None
    except Exception:
        return None
    return [list(e) for e in sorted(edges)]


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
# A surrogate escape in the encoder's output: a lone one is not JSON serde_json accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def dumps_line(msg):
    """One protocol line (bytes, newline terminated): compact, ASCII-only.

    Most messages are plain JSON already: they are encoded as they are, and only a message the
    encoder refuses (a non-finite float, an object it does not know, a key of another type) or
    whose text holds a surrogate escape goes through ``_jsonable`` (the same result, slower).
    """
    try:
        text = _ENCODE(msg)
        if "\\u" not in text or not _SURROGATE_ESCAPE.search(text):
            return text.encode("ascii") + b"\n"
    except (TypeError, ValueError, RecursionError):
        pass
    text = json.dumps(_jsonable(msg), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii") + b"\n"


# ---------------------------------------------------------------------------
# Protocol output and diagnostics
# ---------------------------------------------------------------------------

class ProtocolWriter:
    """Serialises protocol lines from any thread onto the private stdout fd."""

    def __init__(self, binary_file):
        self._file = binary_file
        self.lock = threading.RLock()

    def emit(self, msg):
        data = dumps_line(msg)
        with self.lock:
            try:
                self._file.write(data)
                self._file.flush()
            except (BrokenPipeError, ValueError, OSError):
                # The reader (Rust worker) is gone: nothing left to serve.
                os._exit(0)


_REAL_STDERR = sys.__stderr__  # a private duplicate of fd 2 once setup_stdio() ran


def log(level, message):
    """Runner diagnostics: one line on the real stderr (fd 2)."""
    stream = _REAL_STDERR
    if stream is None:
        return
    try:
        for line in str(message).splitlines() or [""]:
            stream.write("pyoco_runner %s: %s\n" % (level, line))
        stream.flush()
    except Exception:
        pass


def _passthrough(text):
    stream = _REAL_STDERR
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except Exception:
        pass


# ---------------------------------------------------------------------------
# Task output capture
# ---------------------------------------------------------------------------

def _utf8_len(s):
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


class BoundedText:
    """Keeps the first ``limit`` UTF-8 bytes written; counts the rest."""

    __slots__ = ("limit", "parts", "used", "dropped")

    def __init__(self, limit):
        self.limit = max(0, int(limit))
        self.parts = []
        self.used = 0
        self.dropped = 0

    def append(self, s):
        if not s:
            return
        n = _utf8_len(s)
        if self.dropped:
            self.dropped += n
            return
        room = self.limit - self.used
        if n <= room:
            self.parts.append(s)
            self.used += n
            if len(self.parts) > 256:
                self.parts = ["".join(self.parts)]
            return
        if room > 0:
            if s.isascii():
                head = s[:room]
            else:
                head = s.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            hn = _utf8_len(head)
            self.parts.append(head)
            self.used += hn
            self.dropped += n - hn
        else:
            self.dropped += n

    def text(self):
        out = "".join(self.parts)
        if self.dropped:
            out += TRUNCATION_MARKER % self.dropped
        return out


class RunCapture:
    """Per-run output buffers, keyed by task name."""

    def __init__(self, limit):
        self.limit = limit
        self.lock = threading.Lock()
        self.tasks = {}
        self.unattributed = {"stdout": BoundedText(limit), "stderr": BoundedText(limit)}
        self.running = {}  # task name -> number of executions in progress

    def _bufs(self, task):
        bufs = self.tasks.get(task)
        if bufs is None:
            bufs = {"stdout": BoundedText(self.limit), "stderr": BoundedText(self.limit)}
            self.tasks[task] = bufs
        return bufs

    def append(self, task, stream, text):
        with self.lock:
            if task is None:
                self.unattributed[stream].append(text)
            else:
                self._bufs(task)[stream].append(text)

    def sole_running_task(self):
        with self.lock:
            if len(self.running) == 1:
                return next(iter(self.running))
        return None

    def task_started(self, task):
        with self.lock:
            self.running[task] = self.running.get(task, 0) + 1
            self._bufs(task)

    def task_ended(self, task):
        with self.lock:
            n = self.running.get(task, 0) - 1
            if n > 0:
                self.running[task] = n
            else:
                self.running.pop(task, None)

    def output(self, task):
        with self.lock:
            bufs = self.tasks.get(task)
            if bufs is None:
                return "", ""
            return bufs["stdout"].text(), bufs["stderr"].text()

    def unattributed_output(self):
        with self.lock:
            return {k: v.text() for k, v in self.unattributed.items()}


class OutputRouter:
    """Decides where text written to sys.stdout / sys.stderr goes.

    * thread executing a task (thread-local marker) -> that task's buffer;
    * unknown thread while exactly one task is running -> that task;
    * otherwise, during a run -> the run's "unattributed" buffer + real stderr;
    * outside runs -> real stderr.
    """

    def __init__(self, tee=False):
        self.tls = threading.local()
        self.capture = None
        self.live = None
        self.tee = tee

    def set_task(self, name):
        self.tls.task = name

    def clear_task(self):
        self.tls.task = None

    def write(self, stream, text):
        cap = self.capture
        if cap is not None:
            task = getattr(self.tls, "task", None)
            if task is None:
                task = cap.sole_running_task()
            cap.append(task, stream, text)
            live = self.live
            if live is not None:
                live.write(task, stream, text)
            if task is not None and not self.tee:
                return
        _passthrough(text)


class _BinaryShim(io.RawIOBase):
    """``sys.stdout.buffer`` stand-in: decodes bytes and routes them as text."""

    def __init__(self, text_stream):
        super().__init__()
        self._text = text_stream

    def writable(self):
        return True

    def write(self, b):
        data = bytes(b)
        self._text.write(data.decode("utf-8", "replace"))
        return len(data)

    def fileno(self):
        return self._text.fileno()

    def close(self):
        pass


class TaskStream(io.TextIOBase):
    """Replacement for sys.stdout / sys.stderr (see OutputRouter)."""

    def __init__(self, router, stream_name, fd):
        super().__init__()
        self._router = router
        self._stream = stream_name
        self._fd = fd
        self.buffer = _BinaryShim(self)

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "strict"

    @property
    def name(self):
        return "<%s>" % self._stream

    @property
    def line_buffering(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not %s" % type(s).__name__)
        if s:
            self._router.write(self._stream, s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def reconfigure(self, *args, **kwargs):
        pass

    def close(self):
        # Tasks must not be able to close the runner's streams.
        pass


# ---------------------------------------------------------------------------
# Live task log (PROTOCOL.md §5.1)
# ---------------------------------------------------------------------------

def _cut_line(line):
    """A line longer than LOG_MAX_LINE_BYTES UTF-8 bytes, cut with a marker."""
    if len(line) <= LOG_MAX_LINE_BYTES // 4 or _utf8_len(line) <= LOG_MAX_LINE_BYTES:
        return line
    head = line.encode("utf-8", "surrogatepass")[:LOG_MAX_LINE_BYTES].decode("utf-8", "ignore")
    return head + LOG_LINE_CUT_MARKER % LOG_MAX_LINE_BYTES


class LiveLog:
    """The lines of one run, sent to the worker in batched ``log`` events.

    Python-level writes arrive as text (possibly partial lines, kept per task and stream until
    their newline); fd-level output arrives as whole lines from the pipe readers. At most
    ``max_bytes`` UTF-8 bytes of lines are sent per run; later lines are counted as dropped.
    A flusher thread sends what is pending LOG_FLUSH_SEC after the first pending line (or at
    once past LOG_FLUSH_BYTES); ``close()`` sends the rest before ``run_finished``.
    """

    def __init__(self, proto, run_id, max_bytes):
        self.proto = proto
        self.run_id = run_id
        self.max_bytes = max(0, int(max_bytes))
        self.lock = threading.Lock()
        self.emit_lock = threading.Lock()
        self.pending = []
        self.pending_bytes = 0
        self.partial = {}  # (task, stream) -> [text parts]
        self.skipping = set()  # (task, stream) whose over-long line was sent cut: drop to its end
        self.used = 0
        self.lines = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.closed = False
        # Set when a later run's log is attached to the flusher thread while this one is still
        # open (cannot happen in the normal order; keeps the thread from waiting on it forever).
        self.detached = False
        self.attached = False
        self.wake = threading.Event()
        self.full = threading.Event()

    def _add(self, task, stream, line, ts):
        # lock held
        n = _utf8_len(line)
        if self.used + n > self.max_bytes:
            self.dropped_lines += 1
            self.dropped_bytes += n
            return
        self.used += n
        self.lines += 1
        self.pending.append([ts, stream, task, line])
        self.pending_bytes += n
        if not self.wake.is_set():
            self.wake.set()
            if not self.attached:
                # The flusher thread serves a run from its first line on: a run that prints
                # nothing never wakes it.
                self.attached = True
                LOG_FLUSHER.attach(self)
        if self.pending_bytes >= LOG_FLUSH_BYTES:
            self.full.set()

    def add_line(self, task, stream, line, ts=None):
        """A complete line (without its newline) from fd-level capture."""
        with self.lock:
            if self.closed:
                return
            self._add(task, stream, _cut_line(line), ts if ts is not None else time.time())

    def write(self, task, stream, text):
        """Python-level text of ``task`` (None: unattributed)."""
        if not text:
            return
        ts = time.time()
        with self.lock:
            if self.closed:
                return
            key = (task, stream)
            if key in self.skipping:
                end = text.find("\n")
                if end < 0:
                    return
                self.skipping.discard(key)
                text = text[end + 1:]
                if not text:
                    return
            parts = self.partial.get(key)
            if "\n" not in text:
                if parts is None:
                    parts = self.partial[key] = [text]
                else:
                    parts.append(text)
                if len(text) > LOG_MAX_LINE_BYTES or len(parts) > 64:
                    joined = "".join(parts)
                    if len(joined) > LOG_MAX_LINE_BYTES:
                        # A line without end yet, already too long: send it cut now and drop
                        # the rest of it (memory stays bounded by one line per task/stream).
                        del self.partial[key]
                        self._add(task, stream, _cut_line(joined), ts)
                        self.skipping.add(key)
                    else:
                        self.partial[key] = [joined]
                return
            if parts:
                text = "".join(parts) + text
                del self.partial[key]
            lines = text.split("\n")
            rest = lines.pop()
            for line in lines:
                self._add(task, stream, _cut_line(line), ts)
            if rest:
                self.partial[key] = [rest]

    def end_task(self, task):
        """Send the task's unterminated lines (the task ended)."""
        with self.lock:
            self.skipping = {k for k in self.skipping if k[0] != task}
            for key in [k for k in self.partial if k[0] == task]:
                self._add(task, key[1], _cut_line("".join(self.partial.pop(key))), time.time())

    def flush(self):
        with self.emit_lock:
            with self.lock:
                batch = self.pending
                self.pending = []
                self.pending_bytes = 0
                self.wake.clear()
                self.full.clear()
                dl, db = self.dropped_lines, self.dropped_bytes
            if batch:
                self.proto.emit({"type": "log", "run_id": self.run_id, "lines": batch,
                                 "dropped_lines": dl, "dropped_bytes": db})

    def close(self):
        """Send every pending and unterminated line; nothing is accepted afterwards."""
        with self.lock:
            for key in list(self.partial):
                self._add(key[0], key[1], _cut_line("".join(self.partial.pop(key))), time.time())
            self.closed = True
        self.flush()
        self.wake.set()  # lets the flusher go on to the next run
        return {"lines": self.lines, "bytes": self.used,
                "dropped_lines": self.dropped_lines, "dropped_bytes": self.dropped_bytes}

    def flusher(self):
        """Flusher loop for this run (on the runner's one LogFlusher thread); returns once the
        run's log is closed or a later run's log took the thread over."""
        while True:
            self.wake.wait()
            if self.closed or self.detached:
                return
            self.full.wait(LOG_FLUSH_SEC)
            if self.closed or self.detached:
                return
            try:
                self.flush()
            except Exception:
                log("ERROR", "sending log lines failed: %s" % traceback.format_exc())


class LogFlusher:
    """One thread for the runner's whole life that sends the current run's pending log lines
    (LiveLog.flusher): starting a thread per run cost more than a short run itself."""

    def __init__(self):
        self.cond = threading.Condition()
        self.live = None
        self.thread = None

    def attach(self, live):
        with self.cond:
            previous = self.live
            if previous is not None and previous is not live:
                previous.detached = True
                previous.wake.set()
                previous.full.set()
            self.live = live
            if self.thread is None:
                # Started lazily: after the guard's fork, in the process that runs the runs.
                self.thread = threading.Thread(target=self._loop, name="pyoco-runner-log", daemon=True)
                self.thread.start()
            self.cond.notify()

    def _loop(self):
        while True:
            with self.cond:
                while self.live is None:
                    self.cond.wait()
                live = self.live
            try:
                live.flusher()
            except Exception:
                log("ERROR", "log flusher failed: %s" % traceback.format_exc())
            with self.cond:
                if self.live is live:
                    self.live = None


LOG_FLUSHER = LogFlusher()


class FdCapture:
    """fd 1 and fd 2 point at pipes; a reader thread per pipe splits what arrives into lines.

    During a run a line goes to the run's LiveLog, attributed to the only running task (else
    to no task); outside runs it is passed through to the runner's stderr, as before.

    The read ends are non-blocking and each has a lock: the reader thread waits in poll()
    without it and drains the pipe holding it, and ``sync`` drains what is left itself under the
    same lock. So when ``sync`` returns, everything written to fd 1 and 2 before it was called
    has been handled, and an empty pipe (the usual case at a task's end) costs two reads that
    find nothing, not a round trip through the reader threads.
    """

    READ_SIZE = 65536
    # Reads one drain does at most before giving the lock up (a process writing without end
    # must not hold a task's end forever).
    DRAIN_READS = 16

    def __init__(self):
        self.server = None
        self.started = False
        self.fds = {}
        self.locks = {"stdout": threading.Lock(), "stderr": threading.Lock()}
        self.carry = {"stdout": b"", "stderr": b""}
        self.skipping = {"stdout": False, "stderr": False}
        self.eof = {"stdout": False, "stderr": False}

    def start(self):
        for fd, name in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.fds[name] = r
            threading.Thread(target=self._read, args=(r, name), name="pyoco-runner-fd%d" % fd,
                             daemon=True).start()
        self.started = True

    def _line(self, stream, raw):
        text = raw.decode("utf-8", "replace")
        server = self.server
        active = server.current if server is not None else None
        live = active.live if active is not None else None
        if live is not None and not live.closed:
            live.add_line(active.capture.sole_running_task(), stream, text)
        else:
            _passthrough(text + "\n")

    def _drain(self, fd, stream, max_reads, flush_partial=False):
        """Read what the pipe holds (lock held) and hand out its complete lines; with
        ``flush_partial`` also the unterminated rest (a task ended: its last line is done)."""
        for _ in range(max_reads):
            try:
                chunk = os.read(fd, self.READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.eof[stream] = True
                break
            if not chunk:
                self.eof[stream] = True
                break
            try:
                self._chunk(stream, chunk)
            except Exception:
                log("ERROR", "fd capture failed: %s" % traceback.format_exc())
            if len(chunk) < self.READ_SIZE:
                break
        if flush_partial and self.carry[stream]:
            carry, self.carry[stream] = self.carry[stream], b""
            if not self.skipping[stream]:
                self._line(stream, carry)
            self.skipping[stream] = False

    def _chunk(self, stream, chunk):
        carry = self.carry[stream]
        data = carry + chunk if carry else chunk
        parts = data.split(b"\n")
        carry = parts.pop()
        for raw in parts:
            if self.skipping[stream]:
                self.skipping[stream] = False
                continue
            self._line(stream, raw)
        if len(carry) > LOG_MAX_LINE_BYTES * 4 and not self.skipping[stream]:
            self._line(stream, carry)
            carry = b""
            self.skipping[stream] = True  # the rest of this line is dropped
        elif self.skipping[stream]:
            carry = b""
        self.carry[stream] = carry

    def _read(self, fd, stream):
        import select
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        lock = self.locks[stream]
        while not self.eof[stream]:
            try:
                poller.poll()
            except InterruptedError:
                continue
            except Exception:
                return
            with lock:
                self._drain(fd, stream, self.DRAIN_READS)

    def sync(self, timeout=1.0):
        """Handle everything written to fd 1 and 2 so far (waits at most ``timeout`` for a
        reader thread in the middle of a drain)."""
        if not self.started:
            return
        for stream, fd in self.fds.items():
            lock = self.locks[stream]
            if not lock.acquire(timeout=timeout):
                continue
            try:
                self._drain(fd, stream, 4, flush_partial=True)
            finally:
                lock.release()


FD_CAPTURE = FdCapture()


# ---------------------------------------------------------------------------
# Cancel: interrupting the tasks of a cancelled run
# ---------------------------------------------------------------------------

class TaskCancelled(BaseException):
    """Raised inside a task that is executing when its run is cancelled.

    A BaseException (like KeyboardInterrupt), so neither pyoco's retry loop
    (`except Exception`) nor a task's own `except Exception:` swallows it.
    """


IN_TASK = 1
LEFT_TASK = 2

_ORIG_SLEEP = time.sleep
_TASK_TLS = threading.local()          # .slot: TaskSlot of the task this thread executes
_LONGEST_INTERRUPTIBLE_SLEEP = 1e9     # longer sleeps (31 years) go to the original time.sleep
_SIGNAL_INTERRUPT = getattr(signal, "SIGUSR1", None)


class TaskSlot:
    """One task execution on one thread, as seen by the cancel machinery.

    The stdin thread (cancel) and the task thread coordinate through plain
    attribute stores/loads (atomic under the GIL), never through a lock: an
    asynchronous exception can arrive at any bytecode of the task thread, and
    a lock held at that moment could be leaked.  See ActiveRun.interrupt_tasks
    and ActiveRun.leave_interruptible for the protocol.
    """

    __slots__ = ("ident", "main", "event", "state", "sending", "sent", "interrupt")

    def __init__(self, ident, main, event):
        self.ident = ident
        self.main = main
        self.event = event        # the run's cancel Event (interruptible sleep)
        self.state = IN_TASK
        self.sending = False      # stdin thread is about to call SetAsyncExc for this slot
        self.sent = False         # an async TaskCancelled was set for this slot
        self.interrupt = False    # main thread only: the SIGUSR1 handler may raise for this slot


class _Interrupts:
    main_ident = None   # threading.main_thread().ident
    signal_ok = False   # the main thread is interrupted by SIGUSR1 (else like a pool thread)
    main_slot = None    # TaskSlot while the main thread is inside a task
    set_async_exc = None
    warned = False


INTERRUPTS = _Interrupts()


def _load_set_async_exc():
    try:
        import ctypes
        fn = ctypes.pythonapi.PyThreadState_SetAsyncExc
    except Exception:  # pragma: no cover - not CPython
        return None

    def set_async_exc(ident, exc):
        # exc=None passes NULL: clears a pending asynchronous exception.
        return fn(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None)

    return set_async_exc


def _on_interrupt_signal(signum, frame):
    """SIGUSR1 handler (main thread): raise only inside the task it was meant for."""
    slot = INTERRUPTS.main_slot
    if slot is not None and slot.interrupt and slot.state == IN_TASK:
        raise TaskCancelled("run cancelled")


def install_interrupt_signal():
    """(Re)install the SIGUSR1 handler; returns False where signals cannot be used."""
    if _SIGNAL_INTERRUPT is None or not hasattr(signal, "pthread_kill"):
        return False
    try:
        if signal.getsignal(_SIGNAL_INTERRUPT) is not _on_interrupt_signal:
            signal.signal(_SIGNAL_INTERRUPT, _on_interrupt_signal)
        return True
    except (ValueError, OSError):
        return False


def interruptible_sleep(secs):
    """time.sleep replacement: inside a task of a run it returns early with
    TaskCancelled when the run is cancelled; anywhere else (and for argument
    errors) it is the original time.sleep."""
    slot = getattr(_TASK_TLS, "slot", None)
    if slot is None or slot.state != IN_TASK:
        return _ORIG_SLEEP(secs)
    if isinstance(secs, float):
        value = float(secs)
    else:
        try:
            value = operator.index(secs)
        except TypeError:
            return _ORIG_SLEEP(secs)  # raises the original TypeError
    if not value >= 0 or value > _LONGEST_INTERRUPTIBLE_SLEEP:
        return _ORIG_SLEEP(secs)  # ValueError (negative, NaN), OverflowError, or a sleep of decades
    event = slot.event
    if event.is_set():
        raise TaskCancelled("run cancelled")
    if value == 0:
        return _ORIG_SLEEP(0)  # keep "sleep(0) yields the GIL"
    deadline = time.monotonic() + value
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if event.wait(min(remaining, 3600.0)):
            raise TaskCancelled("run cancelled")


def install_interruptible_sleep():
    try:
        interruptible_sleep.__name__ = "sleep"
        interruptible_sleep.__qualname__ = "sleep"
        interruptible_sleep.__doc__ = _ORIG_SLEEP.__doc__
        interruptible_sleep.__wrapped__ = _ORIG_SLEEP
    except Exception:
        pass
    time.sleep = interruptible_sleep


# ---------------------------------------------------------------------------
# Processes of a run (Linux /proc); the guard process
# ---------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
END_OF_RUN_TERM_WAIT = 0.5      # seconds between SIGTERM and SIGKILL at the end of a run
KILL_PASSES_SECONDS = 2.0       # how long the SIGKILL passes may go on (R); the guard allows 5 s


def _read_file(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
    finally:
        os.close(fd)


_STATM = [None, None]  # (pid that opened it, fd): /proc/self means the opener, so reopen after fork


def _rss_bytes():
    """This process's resident memory (Linux /proc/self/statm), or None. One pread of a kept
    descriptor: this runs after every run."""
    pid = os.getpid()
    if _STATM[0] != pid:
        try:
            _STATM[1] = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            _STATM[0] = pid
        except OSError:
            return None
    try:
        fields = os.pread(_STATM[1], 256, 0).split()
    except OSError:
        _STATM[0] = None
        return None
    try:
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError, OSError, AttributeError):
        return None


def proc_state(pid):
    """(state letter, ppid) from /proc/<pid>/stat, or None if the process is gone."""
    data = _read_file("/proc/%d/stat" % pid)
    i = data.rfind(b")")
    if i < 0:
        return None
    fields = data[i + 2:].split(None, 2)
    if len(fields) < 2:
        return None
    try:
        return fields[0].decode("ascii", "replace"), int(fields[1])
    except ValueError:
        return None


def _alive(pid):
    st = proc_state(pid)
    return st is not None and st[0] not in ("Z", "X", "x")


class ProcTree:
    """Descendants of a process from /proc (Linux only).

    Uses /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN); without it,
    one scan of every /proc/<pid>/stat per pass.
    """

    def __init__(self):
        me = os.getpid()
        self.children_files = os.path.exists("/proc/%d/task/%d/children" % (me, me))

    @staticmethod
    def available():
        return sys.platform.startswith("linux") and os.path.isdir("/proc/self/task")

    def _children_from_files(self, pid, threads=True):
        if threads:
            try:
                tids = os.listdir("/proc/%d/task" % pid)
            except OSError:
                return []
        else:
            tids = (str(pid),)
        out = []
        for tid in tids:
            data = _read_file("/proc/%d/task/%s/children" % (pid, tid))
            if data:
                out.extend(int(x) for x in data.split())
        return out

    @staticmethod
    def _scan():
        by_parent = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            return by_parent
        for name in names:
            if not name.isdigit():
                continue
            st = proc_state(int(name))
            if st is not None:
                by_parent.setdefault(st[1], []).append(int(name))
        return by_parent

    def view(self):
        """A children(pid, threads=True) function for one consistent pass."""
        if self.children_files:
            return self._children_from_files
        by_parent = self._scan()
        return lambda pid, threads=True: list(by_parent.get(pid, ()))

    @staticmethod
    def expand(children, roots, exclude=()):
        """roots plus all their descendants (breadth first, no duplicates)."""
        seen = set(exclude)
        out = []
        todo = list(roots)
        while todo:
            pid = todo.pop(0)
            if pid in seen:
                continue
            seen.add(pid)
            out.append(pid)
            todo.extend(children(pid))
        return out


def _signal_pids(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


class RunProcesses:
    """The processes a run started, seen from the runner process R.

    They are R's descendants plus, with the guard, every other descendant of
    the guard G (double-forked or re-parented processes that G adopted as the
    subreaper).  R and G themselves are never signalled.
    """

    def __init__(self, tree, guard_pid, end_of_run_kill):
        self.tree = tree                  # ProcTree or None (not Linux)
        self.me = os.getpid()
        self.guard_pid = guard_pid
        self.end_of_run_kill = end_of_run_kill and tree is not None
        self.lock = threading.Lock()

    def _roots(self, children):
        roots = children(self.me)
        if self.guard_pid:
            roots.extend(c for c in children(self.guard_pid, False) if c != self.me)
        return roots

    def _live(self):
        children = self.tree.view()
        roots = self._roots(children)
        if not roots:
            return []
        pids = ProcTree.expand(children, roots, exclude=(self.me, self.guard_pid))
        return [p for p in pids if _alive(p)]

    def _reap_own_zombies(self):
        """waitpid() on R's own zombie children, by pid (never waitpid(-1):
        that could steal the status a task's Popen is waiting for)."""
        for pid in self.tree.view()(self.me):
            st = proc_state(pid)
            if st is not None and st[0] == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except OSError:
                    pass

    def terminate_for_cancel(self, still_current):
        """Cancel (stdin thread): SIGTERM every live process of the run."""
        if self.tree is None:
            return 0
        if not self.lock.acquire(blocking=False):
            return 0  # the main thread is cleaning up after the run: nothing to cancel
        try:
            if not still_current():
                return 0
            live = self._live()
            _signal_pids(live, signal.SIGTERM)
            return len(live)
        finally:
            self.lock.release()

    def end_of_run(self):
        """After run_finished (main thread): SIGTERM, wait up to 0.5 s, SIGKILL
        until none is left, reap R's own zombie children."""
        if not self.end_of_run_kill:
            return
        with self.lock:
            children = self.tree.view()
            roots = self._roots(children)
            if not roots:
                return  # fast path: one read of the children files
            live = [p for p in ProcTree.expand(children, roots, exclude=(self.me, self.guard_pid)) if _alive(p)]
            if live:
                log("INFO", "end of run: terminating %d leftover process(es) of the run: %s"
                    % (len(live), " ".join(str(p) for p in live[:20])))
                _signal_pids(live, signal.SIGTERM)
                deadline = time.monotonic() + END_OF_RUN_TERM_WAIT
                while True:
                    self._reap_own_zombies()
                    live = self._live()
                    if not live or time.monotonic() >= deadline:
                        break
                    _ORIG_SLEEP(0.01)
                deadline = time.monotonic() + KILL_PASSES_SECONDS
                while live:
                    _signal_pids(live, signal.SIGKILL)
                    _ORIG_SLEEP(0.002)
                    self._reap_own_zombies()
                    live = self._live()
                    if live and time.monotonic() >= deadline:
                        log("WARNING", "end of run: processes still alive after SIGKILL: %s"
                            % " ".join(str(p) for p in live[:20]))
                        break
            self._reap_own_zombies()


# -- the guard (Linux) ---------------------------------------------------------

def _libc_prctl():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.restype = ctypes.c_int

    def call(option, arg2):
        if prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0),
                 ctypes.c_ulong(0)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return call


def _guard_wanted():
    raw = (os.environ.get("PYOCO_RUNNER_GUARD") or "").strip().lower()
    return raw not in ("0", "false", "no", "off")


def start_guard():
    """Split into guard G (this process, never returns) and runner R (the
    forked child, returns G's pid).  Returns None when there is no guard
    (not Linux, PYOCO_RUNNER_GUARD off, or the set-up failed)."""
    if not ProcTree.available() or not _guard_wanted():
        return None
    parent = os.getppid()
    try:
        prctl = _libc_prctl()
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except Exception as exc:
        log("WARNING", "no process guard (PR_SET_CHILD_SUBREAPER failed: %s); task processes may outlive "
            "their run" % _describe_exc(exc))
        return None
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception as exc:
        log("WARNING", "guard: PR_SET_PDEATHSIG failed (%s); relying on the parent check"
            % _describe_exc(exc))
    if os.getppid() != parent:
        os._exit(0)  # the worker died before PDEATHSIG was armed: nobody to serve
    guard_pid = os.getpid()
    watched = {signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        runner_pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 0)
        except Exception:
            pass
        log("WARNING", "no process guard (fork failed: %s)" % _describe_exc(exc))
        return None
    if runner_pid == 0:
        # R: the real runner.
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except Exception:
            pass
        if os.getppid() != guard_pid:
            os._exit(0)  # G died before PDEATHSIG was armed
        return guard_pid
    guard_main(runner_pid, parent, watched)  # never returns


def guard_main(runner_pid, parent, watched):
    """G: reap adopted orphans until R exits or G is told to stop; then kill
    every descendant and exit the way R did."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except Exception:
        pass
    # G never speaks the protocol: drop its copies of the pipes (R keeps them),
    # so the worker sees EOF on stdout as soon as R is gone.
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
    except OSError:
        pass
    tree = ProcTree()
    me = os.getpid()
    runner = [runner_pid, None]  # pid, wait status once reaped
    stop_signal = None
    while runner[1] is None and stop_signal is None:
        try:
            info = signal.sigtimedwait(watched, 1.0)
        except InterruptedError:
            info = None
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGHUP):
            stop_signal = info.si_signo
        _guard_reap(runner)
        if runner[1] is None and stop_signal is None and os.getppid() != parent:
            stop_signal = signal.SIGTERM  # the worker is gone (PDEATHSIG missed or not armed)
    if stop_signal is not None and runner[1] is None:
        try:
            os.kill(runner_pid, signal.SIGKILL)
        except OSError:
            pass
    killed = _guard_kill_all(tree, me, runner)
    deadline = time.monotonic() + 5.0
    while runner[1] is None and time.monotonic() < deadline:
        if not _guard_reap(runner):
            break  # no child left at all
        if runner[1] is None:
            _ORIG_SLEEP(0.005)
    status = runner[1]
    if stop_signal is None and status is not None and os.WIFSIGNALED(status):
        log("WARNING", "runner process %d was killed by signal %d; the guard killed %d leftover process(es)"
            % (runner_pid, os.WTERMSIG(status), killed))
    if stop_signal is not None:
        _exit_like_signal(stop_signal)
    if status is None:
        os._exit(1)
    if os.WIFSIGNALED(status):
        _exit_like_signal(os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _guard_reap(runner):
    """Reap every child that has exited (recording R's status in runner[1]).
    Returns False when the guard has no children left."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        except InterruptedError:
            continue
        if pid == 0:
            return True
        if pid == runner[0]:
            runner[1] = status


def _guard_kill_all(tree, me, runner):
    """SIGKILL every descendant of the guard until a pass finds none alive."""
    killed = set()
    deadline = time.monotonic() + 5.0
    while True:
        children = tree.view()
        live = [p for p in ProcTree.expand(children, children(me, False), exclude=(me,)) if _alive(p)]
        if not live:
            break
        killed.update(live)
        _signal_pids(live, signal.SIGKILL)
        _ORIG_SLEEP(0.001)
        _guard_reap(runner)
        if time.monotonic() >= deadline:
            log("WARNING", "guard: processes still alive after SIGKILL: %s" % " ".join(str(p) for p in live[:20]))
            break
    _guard_reap(runner)
    killed.discard(runner[0])
    return len(killed)


def _exit_like_signal(sig):
    """Terminate with signal `sig` so the parent sees the same status as R's."""
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except Exception:
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass
    os._exit(128 + int(sig))


# ---------------------------------------------------------------------------
# pyoco integration (classes are created once pyoco is imported)
# ---------------------------------------------------------------------------

PYOCO = types.SimpleNamespace(loaded=False)


def load_pyoco():
    """Import pyoco and build the subclasses that hook into it (idempotent)."""
    if PYOCO.loaded:
        return PYOCO
    from importlib import metadata as importlib_metadata

    from pyoco.core.context import Context
    from pyoco.core.engine import Engine
    from pyoco.core.models import Flow, RunContext, RunStatus, Task, TaskState
    from pyoco.dsl import graph as dsl_graph
    from pyoco.dsl.graph_terms import ForEachTerm, PipeRefTerm, RepeatTerm, SwitchTerm, TaskTerm, UntilTerm
    from pyoco.dsl.syntax import TaskWrapper, switch
    from pyoco.discovery.loader import TaskLoader
    from pyoco.trace.backend import TraceBackend

    import concurrent.futures  # noqa: F401  (imported lazily by pyoco's engine; warm it up)
    import inspect  # noqa: F401

    try:
        version = importlib_metadata.version("pyoco")
    except Exception:
        version = getattr(sys.modules.get("pyoco"), "__version__", None) or "unknown"

    class RunnerTrace(TraceBackend):
        """pyoco trace callbacks -> protocol events (called from engine threads)."""

        def __init__(self, active):
            self.active = active

        def on_flow_start(self, flow_name, run_id=None):
            pass

        def on_flow_end(self, flow_name):
            pass

        def on_node_start(self, node_name):
            # Called in the thread that executes the task, right before pyoco
            # resolves its inputs and calls it: from here on a cancel
            # interrupts this thread (TaskCancelled).
            self.active.on_task_started(node_name)
            self.active.enter_interruptible()

        def on_node_end(self, node_name, duration_ms):
            # The task function returned (success path only): stop being
            # interruptible before pyoco finalises the record.  task_finished is
            # emitted from RunnerEngine._execute_task once the record is final.
            self.active.leave_interruptible()

        def on_node_error(self, node_name, error):
            pass

    class RunnerEngine(Engine):
        """pyoco's Engine with two hooks.

        * ``run`` is Engine.run without pyoco's RunLogCapture (which buffers all
          task output unbounded, twice); the runner's own bounded, thread-aware
          capture replaces it.  Scheduling (``_run_flow``) is pyoco's.
        * ``_execute_task`` marks the executing thread with the task name and
          reports the task once pyoco has finalised its record; a task
          interrupted by a cancel (TaskCancelled) is recorded CANCELLED and
          handed back to pyoco's scheduler as done, which then finishes the
          cancel its own way.
        """

        def __init__(self, trace_backend, active):
            super().__init__(trace_backend=trace_backend)
            self._active = active

        def run(self, flow, params=None, run_context=None):
            if not hasattr(Engine, "_run_flow"):  # pragma: no cover - other pyoco versions
                return super().run(flow, params, run_context)
            if run_context is None:
                run_context = RunContext()
            run_ctx = run_context
            run_ctx.flow_name = flow.name
            run_ctx.params = params or {}
            for t in flow.tasks:
                run_ctx.tasks[t.name] = TaskState.PENDING
                run_ctx.ensure_task_record(t.name)
            ctx = Context(params=params or {}, run_context=run_ctx)
            self.trace.on_flow_start(flow.name, run_id=run_ctx.run_id)
            self.active_runs[run_ctx.run_id] = run_ctx
            return self._run_flow(flow, ctx, run_ctx, None)

        def _execute_task(self, task, ctx, log_capture=None):
            active = self._active
            active.task_enter(task.name)
            try:
                try:
                    return super()._execute_task(task, ctx, log_capture)
                finally:
                    # Idempotent; clears an asynchronous TaskCancelled that has
                    # not fired yet, so none can fire in pool/engine code.
                    active.leave_interruptible()
            except TaskCancelled:
                active.cancel_record(task.name)
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    # SystemExit & co. bypass pyoco's `except Exception`:
                    # finalise the record the way pyoco would have.
                    active.fail_unfinished_record(task.name, exc)
                raise
            finally:
                active.task_exit(task.name)
            # Interrupted by a cancel.  DAG mode: returning lets the scheduler
            # see the task as done; its cancel check then cancels the rest and
            # ends the run CANCELLED.  Control-flow mode: pyoco's boundary
            # check marks pending tasks CANCELLED and ends the program.
            if active.control_flow:
                check = getattr(self, "_raise_if_cancel_requested", None)
                if check is not None:
                    check(ctx)
            return None

    PYOCO.version = version
    PYOCO.Context = Context
    PYOCO.Engine = Engine
    PYOCO.Flow = Flow
    PYOCO.RunContext = RunContext
    PYOCO.RunStatus = RunStatus
    PYOCO.Task = Task
    PYOCO.TaskState = TaskState
    PYOCO.TaskWrapper = TaskWrapper
    PYOCO.switch = switch
    PYOCO.graph = dsl_graph
    PYOCO.terms = types.SimpleNamespace(
        ForEachTerm=ForEachTerm, PipeRefTerm=PipeRefTerm, RepeatTerm=RepeatTerm,
        SwitchTerm=SwitchTerm, TaskTerm=TaskTerm, UntilTerm=UntilTerm,
    )
    PYOCO.TaskLoader = TaskLoader
    PYOCO.RunnerTrace = RunnerTrace
    PYOCO.RunnerEngine = RunnerEngine
    PYOCO.loaded = True
    return PYOCO


# ---------------------------------------------------------------------------
# Errors while preparing a run
# ---------------------------------------------------------------------------

class RunFailure(Exception):
    """A run that cannot start; becomes run_finished FAILED with error_kind."""

    def __init__(self, kind, detail, prefix=True):
        self.kind = kind
        self.detail = detail
        self.message = "%s: %s" % (kind, detail) if prefix else detail
        super().__init__(self.message)


# ---------------------------------------------------------------------------
# flow.yaml validation (contract section 8, same reasons and order)
# ---------------------------------------------------------------------------

TOP_KEYS = {"version", "flow", "tasks", "runtime"}
FLOW_KEYS = {"graph", "defaults"}
TASK_KEYS = {"callable", "inputs", "outputs"}
RUNTIME_KEYS = {"expose_env"}

_yaml = None


def _yaml_load(text):
    global _yaml
    if _yaml is None:
        import yaml as _y
        _yaml = _y
    loader = getattr(_yaml, "CSafeLoader", None) or _yaml.SafeLoader
    return _yaml.load(text, Loader=loader)


def _invalid(reason):
    return RunFailure(EK_INVALID_WORKFLOW, "invalid workflow yaml: %s" % reason, prefix=False)


def parse_workflow_yaml(text):
    """Validate flow.yaml text; returns a normalised dict or raises RunFailure.

    Lenient where 0.5.1's gateway already decided (a null optional section is
    treated as absent): the gateway validated the file before publishing it.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid("invalid_utf8")
    if not isinstance(text, str):
        raise _invalid("invalid_bytes")
    try:
        data = _yaml_load(text)
    except Exception as exc:
        raise _invalid("invalid_yaml (%s)" % (str(exc).strip().splitlines() or [type(exc).__name__])[0])
    if not isinstance(data, dict):
        raise _invalid("invalid_yaml_root")
    if "flows" in data:
        raise _invalid("unsupported_key_flows")
    if "discovery" in data:
        raise _invalid("unsupported_key_discovery")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise _invalid("unknown_top_level_keys: %r" % unknown)
    flow = data.get("flow")
    if flow is None:
        raise _invalid("missing_flow")
    if not isinstance(flow, dict):
        raise _invalid("invalid_flow")
    unknown = sorted(str(k) for k in flow if k not in FLOW_KEYS)
    if unknown:
        raise _invalid("unknown_flow_keys: %r" % unknown)
    graph = flow.get("graph")
    if not isinstance(graph, str) or not graph.strip():
        raise _invalid("missing_flow_graph")
    defaults = flow.get("defaults")
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        raise _invalid("invalid_flow_defaults")
    tasks = data.get("tasks")
    if tasks is None:
        tasks = {}
    if not isinstance(tasks, dict):
        raise _invalid("invalid_tasks")
    norm_tasks = OrderedDict()
    for name, conf in tasks.items():
        if not isinstance(name, str) or not name.strip():
            raise _invalid("invalid_task_name")
        if conf is None:
            conf = {}
        if not isinstance(conf, dict):
            raise _invalid("invalid_task_config: %s" % name)
        unknown = sorted(str(k) for k in conf if k not in TASK_KEYS)
        if unknown:
            raise _invalid("unknown_task_keys: %s: %r" % (name, unknown))
        call = conf.get("callable")
        if call is not None and (not isinstance(call, str) or ":" not in call):
            raise _invalid("invalid_task_callable: %s" % name)
        inputs = conf.get("inputs")
        if inputs is None:
            inputs = {}
        if not isinstance(inputs, dict):
            raise _invalid("invalid_task_inputs: %s" % name)
        outputs = conf.get("outputs")
        if outputs is None:
            outputs = []
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise _invalid("invalid_task_outputs: %s" % name)
        norm_tasks[name] = {"callable": call or None, "inputs": inputs, "outputs": outputs}
    runtime = data.get("runtime")
    if runtime is None:
        runtime = {}
    if not isinstance(runtime, dict):
        raise _invalid("invalid_runtime")
    unknown = sorted(str(k) for k in runtime if k not in RUNTIME_KEYS)
    if unknown:
        raise _invalid("unknown_runtime_keys: %r" % unknown)
    expose_env = runtime.get("expose_env")
    if expose_env is None:
        expose_env = []
    if not isinstance(expose_env, list) or not all(isinstance(e, str) for e in expose_env):
        raise _invalid("invalid_runtime_expose_env")
    version = data.get("version", 1)
    try:
        version = int(version)
    except Exception:
        raise _invalid("invalid_version")
    return {
        "version": version,
        "flow": {"graph": graph, "defaults": defaults},
        "tasks": norm_tasks,
        "runtime": {"expose_env": expose_env},
    }


# ---------------------------------------------------------------------------
# Task resolution (only what the graph references)
# ---------------------------------------------------------------------------

def _describe_exc(exc):
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def import_callable(task_name, spec):
    """Import ``module:attr[.attr]``; returns the plain function."""
    p = PYOCO
    module_name, _, attr_path = spec.partition(":")
    module_name = module_name.strip()
    attr_path = attr_path.strip()
    if not module_name or not attr_path or ":" in attr_path:
        raise RunFailure(EK_IMPORT_ERROR, "task %r: invalid callable %r (expected 'module:attr')" % (task_name, spec))
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            # A wheel may have been installed since the last import attempt.
            importlib.invalidate_caches()
            module = importlib.import_module(module_name)
    except BaseException as exc:
        raise RunFailure(
            EK_IMPORT_ERROR,
            "task %r: cannot import module %r (callable %r): %s" % (task_name, module_name, spec, _describe_exc(exc)),
        )
    obj = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RunFailure(
                EK_IMPORT_ERROR,
                "task %r: module %r has no attribute %r (callable %r): %s"
                % (task_name, module_name, attr_path, spec, _describe_exc(exc)),
            )
    if isinstance(obj, p.TaskWrapper):
        obj = obj.task.func
    elif isinstance(obj, p.Task):
        obj = obj.func
    if not callable(obj):
        raise RunFailure(
            EK_IMPORT_ERROR, "task %r: %r is not callable (got %s)" % (task_name, spec, type(obj).__name__)
        )
    return obj


def _copy_value(value):
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _clone_task(source, name):
    p = PYOCO
    return p.Task(
        func=source.func,
        name=name,
        inputs=_copy_value(dict(source.inputs or {})),
        outputs=list(source.outputs or []),
        parallel_group=source.parallel_group,
        fail_policy=source.fail_policy,
        retries=source.retries,
        timeout_sec=source.timeout_sec,
        trigger_policy=source.trigger_policy,
    )


def discover_tasks():
    """Tasks from PYOCO_DISCOVERY_MODULES and ``pyoco.tasks`` entry points.

    Uses pyoco's TaskLoader with an empty config (so it never mutates the
    shared module-level Task objects); callers clone what they use.
    """
    loader = PYOCO.TaskLoader(types.SimpleNamespace(tasks={}))
    try:
        loader.load()
    except BaseException as exc:
        raise RunFailure(EK_IMPORT_ERROR, "task discovery failed (PYOCO_DISCOVERY_MODULES / pyoco.tasks plugins): %s"
                         % _describe_exc(exc))
    return dict(loader.tasks)


def resolve_tasks(names, tasks_conf):
    """Build fresh Task objects for the referenced ``names``.

    YAML tasks with ``callable`` win; other names come from discovery (with
    the YAML ``inputs``/``outputs`` overlaid like pyoco's TaskLoader does).
    """
    p = PYOCO
    resolved = OrderedDict()
    import_errors = []
    need_discovery = []
    for name in names:
        conf = tasks_conf.get(name)
        if conf is not None and conf.get("callable"):
            try:
                func = import_callable(name, conf["callable"])
            except RunFailure as failure:
                import_errors.append(failure.detail)
                continue
            resolved[name] = p.Task(
                func=func,
                name=name,
                inputs=_copy_value(dict(conf.get("inputs") or {})),
                outputs=list(conf.get("outputs") or []),
            )
        else:
            need_discovery.append(name)
    unknown = []
    if need_discovery:
        discovered = discover_tasks()
        for name in need_discovery:
            source = discovered.get(name)
            if source is None:
                unknown.append(name)
                continue
            task = _clone_task(source, name)
            conf = tasks_conf.get(name)
            if conf:
                if conf.get("inputs"):
                    task.inputs.update(_copy_value(conf["inputs"]))
                if conf.get("outputs"):
                    task.outputs.extend(conf["outputs"])
            resolved[name] = task
    if unknown:
        parts = []
        for name in unknown:
            if name in tasks_conf:
                parts.append("%r (defined in tasks without 'callable' and not provided by "
                             "PYOCO_DISCOVERY_MODULES or a pyoco.tasks plugin)" % name)
            else:
                parts.append("%r" % name)
        raise RunFailure(EK_UNKNOWN_TASK, "graph references undefined task(s): %s" % ", ".join(parts))
    if import_errors:
        raise RunFailure(EK_IMPORT_ERROR, "; ".join(import_errors))
    return [resolved[n] for n in names]


# ---------------------------------------------------------------------------
# Graph: Python-expression syntax (0.5.1), interpreted -- never exec'd
# ---------------------------------------------------------------------------

GRAPH_BUILTINS = ("flow", "switch")
_BINOPS = {
    ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.Mod: operator.mod,
}
_OP_SYMBOL = {ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.Mod: "%"}
_CONSTANT_TYPES = (str, int, float, bool)


def _where(node):
    line = getattr(node, "lineno", None)
    col = getattr(node, "col_offset", None)
    if line is None:
        return ""
    return " at line %d, column %d" % (line, (col or 0) + 1)


def _graph_syntax_error(node, what):
    return RunFailure(EK_INVALID_WORKFLOW, "graph: %s%s (allowed: task names, flow, >> & | %% [..], "
                      "switch('<expr>'), string/number constants, tuples/lists)" % (what, _where(node)))


def check_expression_graph(tree, source=None):
    """Whitelist check of a parsed graph.  Returns referenced task names in
    order of first appearance (``flow``/``switch`` excluded)."""
    names = []
    seen = set()
    count = [0]

    def src(node):
        text = None
        if source is not None:
            try:
                text = ast.get_source_segment(source, node)
            except Exception:
                text = None
        if not text:
            return type(node).__name__
        text = " ".join(text.split())
        return repr(text if len(text) <= 60 else text[:57] + "...")

    def visit(node):
        count[0] += 1
        if count[0] > MAX_GRAPH_AST_NODES:
            raise _graph_syntax_error(node, "graph too large")
        if isinstance(node, ast.Name):
            if not isinstance(node.ctx, ast.Load):
                raise _graph_syntax_error(node, "assignment to %r is not allowed" % node.id)
            if node.id not in GRAPH_BUILTINS and node.id not in seen:
                seen.add(node.id)
                names.append(node.id)
            return
        if isinstance(node, ast.Constant):
            if type(node.value) not in (str, int, float, bool):
                raise _graph_syntax_error(node, "constant %r is not allowed" % (node.value,))
            return
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise _graph_syntax_error(node, "operator %s is not allowed" % type(node.op).__name__)
            visit(node.left)
            visit(node.right)
            return
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant) \
                    and type(node.operand.value) in (int, float):
                return
            raise _graph_syntax_error(node, "unary operator %s is not allowed" % type(node.op).__name__)
        if isinstance(node, ast.Subscript):
            visit(node.value)
            sl = node.slice
            if isinstance(sl, ast.Slice):
                raise _graph_syntax_error(node, "slices are not allowed")
            if sl.__class__.__name__ == "Index":  # pragma: no cover - Python < 3.9 AST
                sl = sl.value
            visit(sl)
            return
        if isinstance(node, (ast.Tuple, ast.List)):
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    raise _graph_syntax_error(elt, "starred expressions are not allowed")
                visit(elt)
            return
        if isinstance(node, ast.Call):
            func = node.func
            if not isinstance(func, ast.Name):
                raise _graph_syntax_error(node, "call %s is not allowed" % src(node))
            if func.id == "switch":
                if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) \
                        or not isinstance(node.args[0].value, str):
                    raise _graph_syntax_error(node, "switch() takes exactly one string argument")
                return
            if func.id in GRAPH_BUILTINS:
                raise _graph_syntax_error(node, "call of %r is not allowed" % func.id)
            if node.args or node.keywords:
                raise _graph_syntax_error(node, "call of %r with arguments is not allowed" % func.id)
            # `task()` is a no-op on pyoco's TaskWrapper; the name must be a task.
            visit(func)
            return
        raise _graph_syntax_error(node, "%s %s is not allowed" % (type(node).__name__, src(node)))

    if not isinstance(tree, ast.Module):
        raise _graph_syntax_error(tree, "unexpected graph root")
    if not tree.body:
        raise _graph_syntax_error(tree, "graph is empty")
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            raise _graph_syntax_error(stmt, "statement %s %s is not allowed" % (type(stmt).__name__, src(stmt)))
        visit(stmt.value)
    return names


def eval_expression_graph(tree, namespace):
    """Evaluate a checked graph with Python operator semantics on pyoco objects."""

    def ev(node):
        if isinstance(node, ast.Name):
            return namespace[node.id]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.BinOp):
            left = ev(node.left)
            right = ev(node.right)
            op = type(node.op)
            # Constants may only appear as switch case keys (`"x" >> task`):
            # this keeps `%` string formatting and friends out of reach.
            if isinstance(left, _CONSTANT_TYPES) and (op is not ast.RShift or isinstance(right, _CONSTANT_TYPES)):
                raise _graph_syntax_error(node, "operator %s cannot be applied to constant %r"
                                          % (_OP_SYMBOL[op], left))
            return _BINOPS[op](left, right)
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.Subscript):
            value = ev(node.value)
            sl = node.slice
            if sl.__class__.__name__ == "Index":  # pragma: no cover
                sl = sl.value
            return value[ev(sl)]
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Call):
            if node.func.id == "switch":
                return namespace["switch"](node.args[0].value)
            return namespace[node.func.id]()
        raise RunFailure(EK_INTERNAL_ERROR, "unexpected graph node %s" % type(node).__name__)

    for stmt in tree.body:
        ev(stmt.value)


def build_expression_flow(tree, tasks_conf, flow_name, source=None, names=None):
    p = PYOCO
    if names is None:
        names = check_expression_graph(tree, source)
    tasks = resolve_tasks(names, tasks_conf)
    flow = p.Flow(name=flow_name)
    namespace = {}
    for t in tasks:
        flow.add_task(t)  # 0.5.1 adds tasks before evaluating the graph; we add only referenced ones
        namespace[t.name] = p.TaskWrapper(t)
    namespace["flow"] = flow
    namespace["switch"] = p.switch
    try:
        eval_expression_graph(tree, namespace)
    except RunFailure:
        raise
    except RecursionError:
        raise RunFailure(EK_INVALID_WORKFLOW, "graph: nested too deeply")
    except Exception as exc:
        raise RunFailure(EK_INVALID_WORKFLOW, "graph: evaluation failed: %s" % _describe_exc(exc))
    return flow, [t.name for t in tasks]


# ---------------------------------------------------------------------------
# Graph: pyoco 0.8 graph DSL (pyoco.dsl.graph; lexer/parser, no eval)
# ---------------------------------------------------------------------------

def _dsl_names(pipeline):
    """(task refs, node names) in order of appearance."""
    terms = PYOCO.terms
    refs, nodes = [], []

    def walk(pl):
        for term in pl.terms:
            if isinstance(term, terms.TaskTerm):
                if term.name not in refs:
                    refs.append(term.name)
                node = term.node_name or term.name
                if node not in nodes:
                    nodes.append(node)
            elif isinstance(term, terms.PipeRefTerm):
                raise RunFailure(EK_INVALID_WORKFLOW,
                                 "graph: pipe(%s) is not supported (flow.yaml has no 'pipes' section)" % term.name)
            elif isinstance(term, terms.SwitchTerm):
                for case in term.cases:
                    walk(case.branch)
                if term.default is not None:
                    walk(term.default)
            elif isinstance(term, (terms.RepeatTerm, terms.ForEachTerm, terms.UntilTerm)):
                walk(term.body)

    walk(pipeline)
    return refs, nodes


def build_dsl_flow(graph_src, tasks_conf, flow_name, python_error):
    p = PYOCO
    g = p.graph
    try:
        parsed = g.parse_graph(graph_src)
    except Exception as exc:
        raise RunFailure(
            EK_INVALID_WORKFLOW,
            "graph is neither a pyoco expression graph (%s) nor valid pyoco graph DSL (%s)"
            % (python_error, _describe_exc(exc)),
        )
    refs, nodes = _dsl_names(parsed)
    report = g.validate_graph_terms(parsed)
    if report.errors:
        raise RunFailure(EK_INVALID_WORKFLOW, "graph: " + "; ".join(report.errors))
    tasks = resolve_tasks(refs, tasks_conf)
    try:
        flow = g.build_flow_from_graph(
            graph=graph_src, tasks={t.name: t for t in tasks}, pipes={}, flow_name=flow_name
        )
    except g.GraphReferenceError as exc:
        raise RunFailure(EK_UNKNOWN_TASK, "graph: %s" % exc)
    except RecursionError:
        raise RunFailure(EK_INVALID_WORKFLOW, "graph: nested too deeply")
    except Exception as exc:
        raise RunFailure(EK_INVALID_WORKFLOW, "graph: %s" % _describe_exc(exc))
    return flow, nodes


# Parsed flow.yaml texts (most runs of a worker repeat a few flows): the validated document and
# its parsed graph, so a repeated flow skips PyYAML, the validation and the graph parse. Nothing
# cached is mutated afterwards (resolve_tasks copies the task inputs); tasks are imported and the
# Flow built for every run, as before.
_FLOW_CACHE = OrderedDict()
FLOW_CACHE_ENTRIES = 64
FLOW_CACHE_MAX_TEXT = 256 * 1024


class _ParsedFlow:
    __slots__ = ("cfg", "graph_src", "tree", "names", "python_error", "failure")

    def __init__(self, text):
        self.cfg = self.tree = self.names = self.python_error = self.failure = None
        self.graph_src = None
        try:
            self.cfg = parse_workflow_yaml(text)
        except RunFailure as failure:
            self.failure = failure
            return
        self.graph_src = textwrap.dedent(self.cfg["flow"]["graph"]).strip()
        try:
            self.tree = ast.parse(self.graph_src, mode="exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            if isinstance(exc, SyntaxError):
                self.python_error = "SyntaxError: %s (line %s)" % (exc.msg, exc.lineno)
            else:
                self.python_error = _describe_exc(exc)
            return
        try:
            self.names = check_expression_graph(self.tree, self.graph_src)
        except RunFailure as failure:
            self.failure = failure


def _parsed_flow(workflow_yaml):
    key = workflow_yaml if isinstance(workflow_yaml, str) and len(workflow_yaml) <= FLOW_CACHE_MAX_TEXT else None
    if key is not None:
        hit = _FLOW_CACHE.get(key)
        if hit is not None:
            _FLOW_CACHE.move_to_end(key)
            return hit
    parsed = _ParsedFlow(workflow_yaml)
    if key is not None:
        _FLOW_CACHE[key] = parsed
        while len(_FLOW_CACHE) > FLOW_CACHE_ENTRIES:
            _FLOW_CACHE.popitem(last=False)
    return parsed


def build_yaml_flow(workflow_yaml, flow_name):
    """Returns (flow, task order, graph mode)."""
    parsed = _parsed_flow(workflow_yaml)
    if parsed.failure is not None:
        # A copy: the cached one must not collect the traceback of every run that raises it.
        cached = parsed.failure
        fresh = RunFailure.__new__(RunFailure)
        fresh.__dict__.update(cached.__dict__)
        fresh.args = cached.args
        raise fresh
    cfg = parsed.cfg
    name = flow_name or "main"
    if parsed.tree is None:
        flow, order = build_dsl_flow(parsed.graph_src, cfg["tasks"], name, parsed.python_error)
        return flow, order, "pyoco_dsl"
    flow, order = build_expression_flow(parsed.tree, cfg["tasks"], name, parsed.graph_src,
                                        names=parsed.names)
    return flow, order, "expression"


# ---------------------------------------------------------------------------
# Flow resolver (runs without workflow_yaml)
# ---------------------------------------------------------------------------

class Resolver:
    def __init__(self):
        self._lock = threading.Lock()
        self._fn = None
        self._spec = None

    def spec(self):
        return (os.environ.get("PYOCO_FLOW_RESOLVER") or "").strip()

    def get(self):
        spec = self.spec()
        if not spec:
            return None
        with self._lock:
            if self._fn is not None and self._spec == spec:
                return self._fn
            fn = self._load(spec)
            self._fn, self._spec = fn, spec
            return fn

    @staticmethod
    def _load(spec):
        target, sep, attr = spec.rpartition(":")
        target, attr = target.strip(), attr.strip()
        if not sep or not target or not attr:
            raise RunFailure(EK_RESOLVER_ERROR,
                             "PYOCO_FLOW_RESOLVER=%r: expected 'module:function' or 'path/file.py:function'" % spec)
        is_path = target.endswith(".py") or "/" in target or "\\" in target
        try:
            if is_path:
                path = os.path.abspath(target)
                if not os.path.isfile(path):
                    raise FileNotFoundError("no such file: %s" % path)
                directory = os.path.dirname(path)
                if directory not in sys.path:
                    sys.path.append(directory)  # let the resolver import its siblings
                mod_name = "_pyoco_runner_flow_resolver"
                mspec = importlib.util.spec_from_file_location(mod_name, path)
                if mspec is None or mspec.loader is None:
                    raise ImportError("cannot load %s" % path)
                module = importlib.util.module_from_spec(mspec)
                sys.modules[mod_name] = module
                try:
                    mspec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise
            else:
                module = importlib.import_module(target)
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part)
        except RunFailure:
            raise
        except BaseException as exc:
            raise RunFailure(EK_RESOLVER_ERROR,
                             "cannot load PYOCO_FLOW_RESOLVER=%r: %s" % (spec, _describe_exc(exc)))
        if not callable(obj):
            raise RunFailure(EK_RESOLVER_ERROR, "PYOCO_FLOW_RESOLVER=%r is not callable" % spec)
        return obj


RESOLVER = Resolver()


def build_resolver_flow(flow_name):
    p = PYOCO
    not_found = RunFailure(EK_FLOW_NOT_FOUND, "flow_not_found: %r" % (flow_name,), prefix=False)
    fn = RESOLVER.get()
    if fn is None:
        raise not_found
    try:
        flow = fn(flow_name)
    except KeyError:
        raise not_found
    except BaseException as exc:
        raise RunFailure(EK_RESOLVER_ERROR, "flow resolver failed for %r: %s" % (flow_name, _describe_exc(exc)))
    if not isinstance(flow, p.Flow):
        raise RunFailure(EK_RESOLVER_ERROR,
                         "flow resolver returned %s for %r, expected a pyoco Flow" % (type(flow).__name__, flow_name))
    order = sorted(t.name for t in flow.tasks)
    return flow, order, "resolver"


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------

class ActiveRun:
    """State of the run being executed; shared with the stdin thread (cancel)
    and with engine threads (trace callbacks)."""

    def __init__(self, server, run_id, flow_name, limit):
        self.server = server
        self.proto = server.proto
        self.router = server.router
        self.run_id = run_id
        self.flow_name = flow_name
        self.capture = RunCapture(limit)
        self.live = None  # LiveLog, set by Server.execute
        self.lock = threading.Lock()
        self.cancel_requested = False
        self.engine = None
        self.run_ctx = None
        self.last_error = None
        self.finished_tasks = set()
        self.closed = False  # set once run_finished is being written
        # cancel interruption (PROTOCOL.md §6)
        self.cancel_accepted = False   # a cancel was answered cancelling/already_cancelling
        self.cancel_event = threading.Event()
        self.interrupting = False      # interrupt_tasks() has started
        self.slots = {}                # thread ident -> TaskSlot of the task it executes
        self.control_flow = False      # the flow runs as a control-flow program (main thread)

    # -- cancel (stdin thread) ------------------------------------------------
    def request_cancel(self):
        p = PYOCO
        with self.lock:
            already = self.cancel_requested
            self.cancel_requested = True
            ctx = self.run_ctx
            if ctx is None:
                self.cancel_accepted = True
                return "cancelling"  # flow still being built; applied before the engine starts
            if ctx.status in (p.RunStatus.COMPLETED, p.RunStatus.FAILED, p.RunStatus.CANCELLED):
                return "finishing"
            if self.engine is not None:
                self.engine.cancel(self.run_id)  # RUNNING -> CANCELLING (pyoco)
            if ctx.status == p.RunStatus.RUNNING:
                ctx.status = p.RunStatus.CANCELLING  # engine not registered yet
            self.cancel_accepted = True
            return "already_cancelling" if already else "cancelling"

    def interrupt_tasks(self):
        """Raise TaskCancelled in every thread executing a task of this run
        (stdin thread, once, after the cancel was accepted).

        Pool threads get an asynchronous exception (PyThreadState_SetAsyncExc);
        the main thread gets SIGUSR1, whose handler raises (a signal also
        breaks blocking system calls there).  Blocked interruptible sleeps wake
        on cancel_event.  Lock-free handshake with leave_interruptible():
        ``sending`` is set before ``state`` is checked and cleared only after
        SetAsyncExc returned; the task thread sets ``state`` before it waits
        for ``sending`` to clear and then clears whatever was sent.
        """
        self.interrupting = True
        self.cancel_event.set()
        set_async_exc = INTERRUPTS.set_async_exc
        for slot in list(self.slots.values()):
            if slot.main:
                slot.interrupt = True
                if slot.state == IN_TASK and INTERRUPTS.main_ident is not None:
                    try:
                        signal.pthread_kill(INTERRUPTS.main_ident, _SIGNAL_INTERRUPT)
                    except (OSError, ValueError, TypeError, AttributeError):
                        pass
                continue
            if set_async_exc is None:
                continue
            slot.sending = True
            try:
                if slot.state == IN_TASK and set_async_exc(slot.ident, TaskCancelled):
                    slot.sent = True  # 0 = the thread is gone
            except Exception:
                log("ERROR", "cannot interrupt task thread: %s" % traceback.format_exc())
            finally:
                slot.sending = False

    def enter_interruptible(self):
        """The calling thread starts executing a task of this run."""
        ident = threading.get_ident()
        slot = TaskSlot(ident, ident == INTERRUPTS.main_ident and INTERRUPTS.signal_ok, self.cancel_event)
        _TASK_TLS.slot = slot
        self.slots[ident] = slot
        if slot.main:
            INTERRUPTS.main_slot = slot
        if self.interrupting:
            # The cancel's interrupt pass may have missed this slot.
            raise TaskCancelled("run cancelled")

    def leave_interruptible(self):
        """The calling thread no longer executes task code (idempotent).

        Afterwards no TaskCancelled can be pending for or sent to this thread.
        An interrupt that fires while leaving is absorbed: the task code is
        over by then.
        """
        slot = getattr(_TASK_TLS, "slot", None)
        if slot is None:
            return
        while True:
            try:
                slot.state = LEFT_TASK
                if INTERRUPTS.main_slot is slot:
                    INTERRUPTS.main_slot = None
                while slot.sending:
                    _ORIG_SLEEP(0.0002)
                if slot.sent:
                    INTERRUPTS.set_async_exc(slot.ident, None)
                if self.slots.get(slot.ident) is slot:
                    del self.slots[slot.ident]
                _TASK_TLS.slot = None
                return
            except TaskCancelled:
                continue

    def cancel_record(self, name):
        """Finalise the record of a task interrupted by the cancel."""
        p = PYOCO
        try:
            ctx = self.run_ctx
            record = ctx.ensure_task_record(name)
            now = time.time()
            record.state = p.TaskState.CANCELLED
            record.ended_at = now
            record.duration_ms = (now - record.started_at) * 1000 if record.started_at else None
            record.error = None
            record.traceback = None
            ctx.tasks[name] = p.TaskState.CANCELLED
        except Exception:
            log("ERROR", "cannot finalise record of %s: %s" % (name, traceback.format_exc()))

    def cancel_leftover_tasks(self):
        """End of a cancelled run: tasks still PENDING/RUNNING become CANCELLED."""
        p = PYOCO
        ctx = self.run_ctx
        now = time.time()
        for name, state in list(ctx.tasks.items()):
            record = ctx.task_records.get(name)
            if state in (p.TaskState.PENDING, p.TaskState.RUNNING) or (
                    record is not None and record.state in (p.TaskState.PENDING, p.TaskState.RUNNING)):
                ctx.tasks[name] = p.TaskState.CANCELLED
                record = ctx.ensure_task_record(name)
                record.state = p.TaskState.CANCELLED
                if record.ended_at is None:
                    record.ended_at = now

    # -- engine callbacks ------------------------------------------------------
    def task_enter(self, name):
        self.router.set_task(name)
        self.capture.task_started(name)

    def on_task_started(self, name):
        try:
            record = self.run_ctx.task_records.get(name) if self.run_ctx else None
            at = record.started_at if record is not None and record.started_at else time.time()
            self.proto.emit({"type": "task_started", "run_id": self.run_id, "task": name, "at": at})
        except Exception:
            log("ERROR", "task_started emit failed: %s" % traceback.format_exc())

    def fail_unfinished_record(self, name, exc):
        p = PYOCO
        try:
            ctx = self.run_ctx
            record = ctx.ensure_task_record(name)
            if record.state == p.TaskState.RUNNING:
                now = time.time()
                record.state = p.TaskState.FAILED
                record.ended_at = now
                if record.started_at:
                    record.duration_ms = (now - record.started_at) * 1000
                record.error = str(exc) or type(exc).__name__
                record.traceback = traceback.format_exc()
                ctx.tasks[name] = p.TaskState.FAILED
        except Exception:
            log("ERROR", "cannot finalise record of %s: %s" % (name, traceback.format_exc()))

    def task_exit(self, name):
        self.router.clear_task()
        if self.live is not None:
            # fd-level output the task wrote is read while it still counts as running, so a
            # line of its child process is attributed to it (PROTOCOL.md §5.1).
            try:
                FD_CAPTURE.sync()
            except Exception:
                log("ERROR", "fd capture sync failed: %s" % traceback.format_exc())
        self.capture.task_ended(name)
        if self.live is not None:
            self.live.end_task(name)
        try:
            self._emit_task_finished(name)
        except Exception:
            log("ERROR", "task_finished emit failed: %s" % traceback.format_exc())

    def _emit_task_finished(self, name, synthetic=False):
        p = PYOCO
        ctx = self.run_ctx
        record = ctx.task_records.get(name)
        state = ctx.tasks.get(name)
        if record is not None and record.state in (p.TaskState.SUCCEEDED, p.TaskState.FAILED, p.TaskState.CANCELLED):
            state = record.state
        state_value = state.value if hasattr(state, "value") else state
        if state_value == "FAILED" and record is not None and record.error is not None:
            self.last_error = record.error
        out, err = self.capture.output(name)
        with self.proto.lock:
            self.finished_tasks.add(name)
            msg = {
                "type": "task_finished",
                "run_id": self.run_id,
                "task": name,
                "state": state_value,
                "at": record.ended_at if record is not None else time.time(),
                "duration_ms": None if synthetic or record is None else record.duration_ms,
                "error": None if synthetic or record is None else record.error,
                "stdout": out,
                "stderr": err,
            }
            if not synthetic and record is not None:
                # The task's whole record (inputs, output, traceback, …): the worker keeps the
                # run's snapshot from these instead of a `snapshot` of every task after each one.
                msg["record"] = self.task_record(name, record)
            self.proto.emit(msg)

    def task_record(self, name, record):
        """One task's serialised record, as in `task_records` (PROTOCOL.md §3.3)."""
        ctx = self.run_ctx
        safe = getattr(ctx, "_safe_value", None) or _pyoco_safe_value
        state = record.state
        rec = {
            "state": state.value if hasattr(state, "value") else state,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "duration_ms": record.duration_ms,
            "error": record.error,
            "traceback": record.traceback,
            "inputs": {k: safe(v) for k, v in list(record.inputs.items())},
            "output": safe(record.output),
            "artifacts": record.artifacts,
        }
        bound_task_record(rec)
        out, err = self.capture.output(name)
        rec["stdout"] = out
        rec["stderr"] = err
        return rec

    # -- snapshots -------------------------------------------------------------
    def task_map(self):
        ctx = self.run_ctx
        if ctx is None:
            return {}
        for _ in range(5):
            try:
                return {k: (v.value if hasattr(v, "value") else v) for k, v in list(ctx.tasks.items())}
            except RuntimeError:  # dict changed size during iteration
                time.sleep(0)
        return {}

    def task_records(self):
        ctx = self.run_ctx
        if ctx is None:
            return {}
        records = None
        for _ in range(5):
            try:
                records = ctx.serialize_task_records()
                break
            except RuntimeError:
                time.sleep(0)
        if records is None:
            return {}
        for name, rec in records.items():
            bound_task_record(rec)
            out, err = self.capture.output(name)
            rec["stdout"] = out
            rec["stderr"] = err
        return records

    def status_value(self):
        ctx = self.run_ctx
        return ctx.status.value if ctx is not None else "RUNNING"

    def emit_snapshot(self):
        with self.proto.lock:
            if self.closed:
                return
            ctx = self.run_ctx
            self.proto.emit({
                "type": "snapshot",
                "run_id": self.run_id,
                "status": self.status_value(),
                "tasks": self.task_map(),
                "task_records": self.task_records(),
                "error": self.last_error,
                "start_time": ctx.start_time if ctx else None,
                "end_time": ctx.end_time if ctx else None,
            })


class Server:
    def __init__(self, proto, router, max_output, streams=None, procs=None,
                 log_max_bytes=DEFAULT_LOG_MAX_BYTES_PER_RUN):
        self.proto = proto
        self.router = router
        self.max_output = max_output
        self.log_max_bytes = log_max_bytes
        self.streams = streams  # (stdout proxy, stderr proxy, stdin) to restore before each run
        self.cwd = os.getcwd()
        self.requests = queue.Queue()
        self.state_lock = threading.Lock()
        self.current = None
        self.remembered_cancels = OrderedDict()
        self.parent_pid = os.getppid()  # the guard, when there is one
        self.procs = procs if procs is not None else RunProcesses(None, None, False)
        self.rss_after_gc = _rss_bytes()  # release_run_memory()

    # -- stdin thread ------------------------------------------------------------
    def read_requests(self, binary_in):
        try:
            for raw in binary_in:
                try:
                    self.handle_line(raw)
                except Exception:
                    log("ERROR", "request handling failed: %s" % traceback.format_exc())
                    self.proto.emit({"type": "error", "error": "internal error while handling a request"})
        except Exception:
            log("ERROR", "stdin reader failed: %s" % traceback.format_exc())
        # EOF = no more requests: finish what is queued, then exit (like
        # "shutdown").  If the parent process is gone, exit immediately.
        self.requests.put(None)
        parent = self.parent_pid
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                log("INFO", "parent process gone; exiting")
                os._exit(0)

    def handle_line(self, raw):
        line = raw.strip()
        if not line:
            return
        try:
            req = json.loads(line.decode("utf-8"))
        except Exception as exc:
            self.proto.emit({"type": "error", "error": "invalid request line: %s" % _describe_exc(exc)})
            return
        if not isinstance(req, dict):
            self.proto.emit({"type": "error", "error": "invalid request: not a JSON object"})
            return
        rtype = req.get("type")
        rid = req.get("id")
        if rtype == "ping":
            msg = {"type": "pong"}
            if rid is not None:
                msg["id"] = rid
            with self.state_lock:
                cur = self.current
            msg["busy"] = cur is not None
            msg["run_id"] = cur.run_id if cur is not None else None
            self.proto.emit(msg)
        elif rtype == "cancel":
            self.handle_cancel(req)
        elif rtype == "run":
            self.requests.put(req)
        elif rtype == "shutdown":
            self.requests.put(None)
        else:
            msg = {"type": "error", "error": "unknown request type %r" % (rtype,), "request_type": rtype}
            if rid is not None:
                msg["id"] = rid
            self.proto.emit(msg)

    def handle_cancel(self, req):
        run_id = req.get("run_id")
        with self.state_lock:
            active = self.current
            if active is not None and active.run_id == run_id:
                result = active.request_cancel()
            else:
                result = "not_running"
                if isinstance(run_id, str):
                    self.remembered_cancels[run_id] = time.time()
                    while len(self.remembered_cancels) > MAX_REMEMBERED_CANCELS:
                        self.remembered_cancels.popitem(last=False)
        msg = {"type": "cancel_ack", "run_id": run_id, "result": result,
               "accepted": result in ("cancelling", "already_cancelling")}
        if req.get("id") is not None:
            msg["id"] = req.get("id")
        self.proto.emit(msg)
        if active is not None and result == "cancelling":
            if active.run_ctx is not None:
                try:
                    active.emit_snapshot()
                except Exception:
                    log("ERROR", "snapshot after cancel failed: %s" % traceback.format_exc())
            try:
                active.interrupt_tasks()
            except Exception:
                log("ERROR", "interrupting the run's tasks failed: %s" % traceback.format_exc())
            try:
                self.procs.terminate_for_cancel(lambda: self.current is active and not active.closed)
            except Exception:
                log("ERROR", "terminating the run's processes failed: %s" % traceback.format_exc())

    # -- main thread -------------------------------------------------------------
    def serve(self):
        while True:
            req = self.requests.get()
            if req is None:
                self.proto.emit({"type": "bye"})
                return
            try:
                self.execute(req)
            except BaseException:
                # execute() reports its own failures; this is a last resort.
                log("ERROR", "run execution crashed: %s" % traceback.format_exc())
                with self.state_lock:
                    self.current = None
                self.router.capture = None
                self.router.live = None
            try:
                self.procs.end_of_run()  # no process of this run survives into the next
            except BaseException:
                log("ERROR", "end-of-run process cleanup failed: %s" % traceback.format_exc())
            try:
                self.release_run_memory()
            except BaseException:
                log("ERROR", "end-of-run garbage collection failed: %s" % traceback.format_exc())

    def release_run_memory(self):
        """A finished run's objects are reference cycles (the run's engine holds a trace
        that points back at the run, which holds the engine), which only a full collection frees,
        and a warm runner waiting for work may not make one for hours: a task that returned
        300 MB kept its runner at 300 MB. So collect after a run that left the process
        GC_AFTER_GROWTH_BYTES bigger than after the last collection (a few ms, after
        run_finished went out); after every run where /proc/self/statm cannot tell."""
        rss = _rss_bytes()
        if rss is not None and self.rss_after_gc is not None:
            if rss - self.rss_after_gc < GC_AFTER_GROWTH_BYTES:
                self.rss_after_gc = min(self.rss_after_gc, rss)
                return
        gc.collect()
        self.rss_after_gc = _rss_bytes()

    def reset_process_state(self):
        """Undo what a previous task may have changed process-wide."""
        install_interrupt_signal()
        if time.sleep is not interruptible_sleep:
            time.sleep = interruptible_sleep
        if self.streams is not None:
            out, err, inp = self.streams
            if sys.stdout is not out:
                sys.stdout = out
            if sys.stderr is not err:
                sys.stderr = err
            if sys.stdin is not inp:
                sys.stdin = inp
        try:
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        except OSError:
            try:
                os.chdir(self.cwd)
            except OSError:
                log("WARNING", "cannot return to working directory %s" % self.cwd)

    def execute(self, req):
        received = time.time()
        self.reset_process_state()
        run_id = req.get("run_id")
        flow_name = req.get("flow_name")
        finished = [False]

        def finish(status, error=None, kind=None, active=None, mode=None, tb=None, start=None, end=None,
                   cancel_requested=False):
            if finished[0]:
                return
            finished[0] = True
            msg = {"type": "run_finished", "run_id": run_id, "flow_name": flow_name, "status": status,
                   "error": error, "error_kind": kind, "tasks": {}, "task_records": {},
                   "start_time": start if start is not None else received,
                   "end_time": end if end is not None else time.time(),
                   "cancel_requested": cancel_requested, "graph_mode": mode, "traceback": tb,
                   "unattributed": {"stdout": "", "stderr": ""}}
            if active is not None and active.live is not None:
                # Every line of the run goes out before run_finished (PROTOCOL.md §5.1).
                self.router.live = None
                try:
                    FD_CAPTURE.sync()
                except Exception:
                    log("ERROR", "fd capture sync failed: %s" % traceback.format_exc())
                msg["log"] = active.live.close()
            if active is not None:
                msg["unattributed"] = active.capture.unattributed_output()
                if active.run_ctx is not None:
                    msg["tasks"] = active.task_map()
                    msg["task_records"] = active.task_records()
                    msg["flow_name"] = active.flow_name
            with self.state_lock:
                if self.current is active:
                    self.current = None
            self.router.capture = None
            try:
                with self.proto.lock:
                    if active is not None:
                        active.closed = True
                    self.proto.emit(msg)
            except Exception:
                log("ERROR", "run_finished serialisation failed: %s" % traceback.format_exc())
                self.proto.emit({"type": "run_finished", "run_id": _jsonable(run_id), "flow_name": None,
                                 "status": "FAILED", "error": "internal_error: cannot serialise run result",
                                 "error_kind": EK_INTERNAL_ERROR, "tasks": {}, "task_records": {},
                                 "start_time": received, "end_time": time.time(), "cancel_requested": False,
                                 "graph_mode": mode, "traceback": None,
                                 "unattributed": {"stdout": "", "stderr": ""}})

        # -- request validation
        problem = None
        if not isinstance(run_id, str) or not run_id:
            problem = "'run_id' must be a non-empty string"
        elif flow_name is not None and not isinstance(flow_name, str):
            problem = "'flow_name' must be a string"
        elif req.get("params") is not None and not isinstance(req.get("params"), dict):
            problem = "'params' must be an object"
        elif req.get("workflow_yaml") is not None and not isinstance(req.get("workflow_yaml"), str):
            problem = "'workflow_yaml' must be a string or null"
        limit = req.get("max_output_bytes", self.max_output)
        if problem is None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            problem = "'max_output_bytes' must be a non-negative integer"
        if problem is not None:
            finish("FAILED", "invalid_request: " + problem, EK_INVALID_REQUEST)
            return
        params = req.get("params") or {}

        active = ActiveRun(self, run_id, flow_name, limit)
        log_max = req.get("log_max_bytes", self.log_max_bytes)
        if not isinstance(log_max, int) or isinstance(log_max, bool) or log_max < 0:
            log_max = self.log_max_bytes
        if log_max > 0:
            active.live = LiveLog(self.proto, run_id, log_max)
        with self.state_lock:
            self.current = active
            if self.remembered_cancels.pop(run_id, None) is not None:
                active.cancel_requested = True
        if active.cancel_requested:
            finish("CANCELLED", active=active, cancel_requested=True)
            return

        p = PYOCO
        self.router.capture = active.capture
        self.router.live = active.live
        mode = None
        try:
            try:
                if req.get("workflow_yaml") is not None:
                    flow, order, mode = build_yaml_flow(req["workflow_yaml"], flow_name)
                else:
                    flow, order, mode = build_resolver_flow(flow_name)
            except RunFailure as failure:
                finish("FAILED", failure.message, failure.kind, active=active, mode=mode,
                       cancel_requested=active.cancel_requested)
                return
            active.flow_name = flow.name

            run_ctx = p.RunContext(run_id=run_id)
            run_ctx.flow_name = flow.name
            run_ctx.params = params
            for key in ("tag", "tags", "tenant_id", "api_key_id", "workflow_yaml_sha256", "workflow_yaml_bytes"):
                if key in req:
                    run_ctx.metadata[key] = req[key]
            # Deterministic task order (graph order) in every tasks map we emit.
            flow_names = {t.name for t in flow.tasks}
            ordered = [n for n in order if n in flow_names] + sorted(flow_names.difference(order))
            for name in ordered:
                run_ctx.tasks[name] = p.TaskState.PENDING
                run_ctx.ensure_task_record(name)

            engine = p.RunnerEngine(p.RunnerTrace(active), active)
            try:
                active.control_flow = bool(flow.has_control_flow())
            except Exception:
                active.control_flow = False
            with active.lock:
                active.run_ctx = run_ctx
                active.engine = engine
                if active.cancel_requested:
                    run_ctx.status = p.RunStatus.CANCELLING

            self.proto.emit({
                "type": "run_started", "run_id": run_id, "flow_name": flow.name,
                "status": run_ctx.status.value, "graph_mode": mode,
                "tasks": active.task_map(), "task_records": active.task_records(),
                "start_time": run_ctx.start_time,
                "edges": task_edges(flow),
            })

            error = kind = tb = None
            try:
                engine.run(flow, params, run_ctx)
            except BaseException as exc:
                if run_ctx.status == p.RunStatus.CANCELLED or active.cancel_accepted:
                    # 0.5.1: a cancelled run that raised is still CANCELLED, no
                    # error; likewise whatever a task raised after the cancel
                    # was accepted (e.g. its child process got SIGTERM).
                    pass
                else:
                    run_ctx.status = p.RunStatus.FAILED
                    error = str(exc) or type(exc).__name__
                    kind = EK_EXECUTION_ERROR
                    tb = traceback.format_exc()
            if run_ctx.end_time is None:
                run_ctx.end_time = time.time()
            status = run_ctx.status
            if active.cancel_accepted and status != p.RunStatus.CANCELLED:
                # Rule: a run whose cancel was accepted never ends COMPLETED
                # (nor FAILED by what its interrupted tasks raised).
                active.cancel_leftover_tasks()
                run_ctx.status = status = p.RunStatus.CANCELLED
                error = kind = tb = None
            elif status in (p.RunStatus.CANCELLING, p.RunStatus.RUNNING, p.RunStatus.PENDING):
                # Not cancelled, yet not terminal (should not happen): every
                # task ran, so the run completed.
                run_ctx.status = status = p.RunStatus.COMPLETED
            if status == p.RunStatus.CANCELLED:
                for name, state in list(run_ctx.tasks.items()):
                    if state == p.TaskState.CANCELLED and name not in active.finished_tasks:
                        active._emit_task_finished(name, synthetic=True)
            finish(status.value, error, kind, active=active, mode=mode, tb=tb,
                   start=run_ctx.start_time, end=run_ctx.end_time, cancel_requested=active.cancel_requested)
        except BaseException as exc:
            tb = traceback.format_exc()
            log("ERROR", "internal error in run %s: %s" % (run_id, tb))
            finish("FAILED", "internal_error: %s" % _describe_exc(exc), EK_INTERNAL_ERROR, active=active,
                   mode=mode, tb=tb, cancel_requested=active.cancel_requested)


# ---------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------

def _env_int(name, default):
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        return value if value >= 0 else default
    except ValueError:
        log("WARNING", "ignoring %s=%r (not a non-negative integer)" % (name, raw))
        return default


def _env_flag(name):
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def setup_stdio():
    """Move the protocol off fds 0/1; returns (binary protocol out, binary protocol in)."""
    global _REAL_STDERR
    proto_out_fd = os.dup(1)
    proto_in_fd = os.dup(0)
    # The runner's own log goes to a private duplicate of the original stderr.
    log_fd = os.dup(2)
    _REAL_STDERR = os.fdopen(log_fd, "w", encoding="utf-8", errors="backslashreplace",
                             buffering=1)
    if sys.platform != "win32" and not (os.environ.get("PYOCO_RUNNER_CAPTURE_FDS") or "").strip().lower() in (
            "0", "false", "no", "off"):
        # fd 1 and fd 2 become pipes read by the runner (PROTOCOL.md §5.1): output of child
        # processes and C code reaches the live task log; outside runs it is passed through.
        FD_CAPTURE.start()
    else:
        os.dup2(2, 1)  # anything written to fd 1 now lands in the log (stderr)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if sys.platform == "win32":  # pragma: no cover - best effort for child processes
        try:
            import ctypes
            import msvcrt
            kernel32 = ctypes.windll.kernel32
            kernel32.SetStdHandle(-11, msvcrt.get_osfhandle(1))  # STD_OUTPUT_HANDLE
            kernel32.SetStdHandle(-10, msvcrt.get_osfhandle(0))  # STD_INPUT_HANDLE
        except Exception:
            pass
    out = os.fdopen(proto_out_fd, "wb")
    inp = os.fdopen(proto_in_fd, "rb")
    return out, inp


def main():
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    except Exception:
        pass
    # Linux: split into the guard (this process; never returns from here) and
    # the runner (a forked child) before anything else happens: no threads yet,
    # pyoco not imported, the protocol fds untouched.
    guard_pid = start_guard()
    procs = RunProcesses(ProcTree() if ProcTree.available() else None, guard_pid,
                         end_of_run_kill=_guard_wanted())
    INTERRUPTS.main_ident = threading.main_thread().ident
    INTERRUPTS.set_async_exc = _load_set_async_exc()
    INTERRUPTS.signal_ok = install_interrupt_signal()
    install_interruptible_sleep()
    # Do not let the runner's own directory shadow user modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]

    out, inp = setup_stdio()
    proto = ProtocolWriter(out)
    router = OutputRouter(tee=_env_flag("PYOCO_RUNNER_TEE_TASK_OUTPUT"))
    sys.stdout = TaskStream(router, "stdout", 1)
    sys.stderr = TaskStream(router, "stderr", 2)
    sys.stdin = open(os.devnull, "r")
    streams = (sys.stdout, sys.stderr, sys.stdin)

    try:
        load_pyoco()
    except BaseException as exc:
        proto.emit({"type": "fatal", "error": "cannot import pyoco: %s" % _describe_exc(exc),
                    "traceback": traceback.format_exc()})
        sys.exit(3)

    max_output = _env_int("PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES", DEFAULT_MAX_TASK_OUTPUT_BYTES)
    global MAX_RECORD_VALUE_BYTES
    MAX_RECORD_VALUE_BYTES = _env_int("PYOCO_RUNNER_MAX_RECORD_VALUE_BYTES", DEFAULT_MAX_RECORD_VALUE_BYTES)
    log_max = _env_int("PYOCO_RUNNER_LOG_MAX_BYTES_PER_RUN", DEFAULT_LOG_MAX_BYTES_PER_RUN)
    server = Server(proto, router, max_output, streams, procs, log_max_bytes=log_max)
    FD_CAPTURE.server = server
    proto.emit({
        "type": "ready",
        "protocol": PROTOCOL_VERSION,
        "runner": RUNNER_VERSION,
        "pid": os.getpid(),
        "guard_pid": guard_pid,
        "python": platform.python_version(),
        "pyoco": PYOCO.version,
        "cwd": os.getcwd(),
        "max_task_output_bytes": max_output,
        "max_record_value_bytes": MAX_RECORD_VALUE_BYTES,
        "log_max_bytes_per_run": log_max,
        "fd_capture": FD_CAPTURE.started,
        "flow_resolver": RESOLVER.spec() or None,
    })
    reader = threading.Thread(target=server.read_requests, args=(inp,), name="pyoco-runner-stdin", daemon=True)
    reader.start()
    server.serve()
    try:
        out.flush()
    except Exception:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
