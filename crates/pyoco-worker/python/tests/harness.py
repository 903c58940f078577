"""Test harness: spawns pyoco_runner.py and speaks its JSON-lines protocol.

Plain unittest (no pytest); needs only pyoco installed in the interpreter
running the tests (the runner is started with the same interpreter).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNER = HERE.parent / "pyoco_runner.py"


def _reject_constant(name):
    raise ValueError("non-standard JSON constant %s" % name)


def strict_loads(line):
    """JSON as a strict reader (serde_json) sees it: no NaN/Infinity."""
    return json.loads(line, parse_constant=_reject_constant)


# Task modules shared by the tests (written to a temp dir on PYTHONPATH).
TASK_MODULES = {
    "rt_tasks.py": '''
        import logging
        import os
        import subprocess
        import sys
        import threading
        import time

        def add_one(x):
            print("adding", x)
            return x + 1

        def to_text(value, t1):
            # `value` comes from inputs ($node.t1.output), `t1` by name from results
            return {"text": "v=%s" % value, "by_name": t1}

        def boom():
            raise ValueError("kaboom")

        def sleepy(seconds=1.0):
            time.sleep(seconds)
            return "slept"

        def after(x=0):
            return "after"

        def noisy():
            print("hello from stdout")
            print("warn from stderr", file=sys.stderr)
            sys.stdout.write("raw write\\n")
            sys.stdout.buffer.write(b"bytes write\\n")
            t = threading.Thread(target=lambda: print("from child thread"))
            t.start()
            t.join()
            logging.getLogger("rt.noisy").warning("logged warning")
            subprocess.run([sys.executable, "-c", "print('from subprocess')"], check=True)
            os.write(1, b"raw fd1 write\\n")
            sys.stdout.flush()
            return "ok"

        def ticker(n=5, every=0.1):
            for i in range(n):
                print("tick %d" % i)
                time.sleep(every)
            return n

        def many(n):
            for i in range(n):
                print("line %d" % i)
            return n

        def subproc_mixed():
            subprocess.run([sys.executable, "-c",
                            "import sys; print('child out'); print('child err', file=sys.stderr); "
                            "sys.stdout.write('no newline')"], check=True)
            sys.stdout.write("py partial")
            return "ok"

        def endless_line(n):
            for _ in range(n):
                sys.stdout.write("y" * 100)
            sys.stdout.write("\\nafter\\n")
            return n

        def shout(n):
            sys.stdout.write("x" * n)
            return n

        def big_text(n):
            return "b" * n

        def big_list(n):
            return list(range(n))

        def echo(value=None):
            return len(value)

        def unicode_out():
            print("h\\u00e9llo \\u2713")
            return "\\u00fcn\\u00ef"

        def nonjson():
            return {"s": {1, 2}}

        def nan_out():
            return float("nan")

        def exits():
            sys.exit(3)

        def interrupts():
            raise KeyboardInterrupt()

        def reads_stdin():
            return sys.stdin.read()

        def touch(path):
            with open(path, "w") as fh:
                fh.write("ran")
            return path

        def choose(mode):
            return mode

        def tag(label="?"):
            print("tag", label)
            return label

        def pick_a():
            return "A"

        def chatter(label, n=50):
            for i in range(n):
                print("%s %d" % (label, i))
                if i % 10 == 0:
                    time.sleep(0.001)
            return label

        def vandal():
            import io
            import tempfile
            os.chdir(tempfile.gettempdir())
            sys.stdout = io.StringIO()
            sys.stderr = io.StringIO()
            return os.getcwd()

        def pick_b():
            return "B"
    ''',
    "rt_disc.py": '''
        import os
        from pyoco import task

        @task
        def disc_a():
            return "a"

        @task
        def disc_double(x):
            return x * 2

        @task
        def disc_c():
            return "c"

        @task
        def disc_trap():
            with open(os.environ["RT_TRAP_FILE"], "w") as fh:
                fh.write("ran")
            return "trap"
    ''',
    "rt_resolver_mod.py": '''
        from pyoco import task
        from pyoco.core.models import Flow

        @task
        def r1():
            print("r1 says hi")
            return 1

        @task
        def r2(r1):
            return r1 + 1

        def resolve(name):
            if name == "known":
                flow = Flow(name="known_flow")
                flow >> r1 >> r2
                return flow
            if name == "broken":
                raise RuntimeError("resolver broke")
            if name == "notaflow":
                return 42
            raise KeyError(name)
    ''',
    "rt_loud.py": '''
        import sys
        print("loud module imported")
        print("loud module stderr", file=sys.stderr)

        def fn():
            return "loud"
    ''',
    "rt_badimport.py": '''
        raise RuntimeError("module fails at import time")
    ''',
}

RESOLVER_FILE = '''
from pyoco import task
from pyoco.core.models import Flow

@task
def f1():
    return "from-file"

def resolve(name):
    if name == "filed":
        flow = Flow(name="filed")
        flow >> f1
        return flow
    raise KeyError(name)
'''


def write_task_modules(directory):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in TASK_MODULES.items():
        (directory / name).write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return directory


class RunnerProcess:
    """One runner subprocess with line readers on stdout and stderr."""

    def __init__(self, cwd, pythonpath=(), env=None, python=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYOCO_")}
        full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        full_env.pop("PYTHONHASHSEED", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            [python or sys.executable, "-u", str(RUNNER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(cwd),
            env=full_env,
        )
        self.messages = queue.Queue()
        self.raw_lines = []
        self.bad_lines = []
        self.stderr_chunks = []
        self._out_thread = threading.Thread(target=self._read_stdout, daemon=True)
        self._err_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._out_thread.start()
        self._err_thread.start()
        self.ready = self.next(timeout=60)
        if self.ready.get("type") != "ready":
            raise AssertionError("expected ready, got %r (stderr: %s)" % (self.ready, self.stderr_text()))

    def _read_stdout(self):
        for raw in self.proc.stdout:
            self.raw_lines.append(raw)
            try:
                text = raw.decode("ascii")
                if not text.endswith("\n"):
                    raise ValueError("line not newline-terminated")
                msg = strict_loads(text)
                if not isinstance(msg, dict) or "type" not in msg:
                    raise ValueError("not a typed object")
            except Exception as exc:  # noqa: BLE001
                self.bad_lines.append((raw, repr(exc)))
                continue
            self.messages.put(msg)
        self.messages.put({"type": "__eof__"})

    def _read_stderr(self):
        for raw in self.proc.stderr:
            self.stderr_chunks.append(raw.decode("utf-8", "replace"))

    def stderr_text(self):
        return "".join(self.stderr_chunks)

    def send(self, obj):
        data = obj if isinstance(obj, (bytes, bytearray)) else (json.dumps(obj) + "\n").encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, timeout=30):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message within %ss (stderr: %s)" % (timeout, self.stderr_text()[-3000:]))

    def wait_for(self, predicate, timeout=30):
        """Messages up to and including the first one matching predicate."""
        seen = []
        deadline = time.time() + timeout
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise AssertionError("timeout; saw %r" % [m.get("type") for m in seen])
            msg = self.next(timeout=remaining)
            if msg.get("type") == "__eof__":
                raise AssertionError("runner exited; stderr: %s" % self.stderr_text()[-3000:])
            seen.append(msg)
            if predicate(msg):
                return seen

    def run(self, run_id, workflow_yaml=None, flow_name="main", params=None, timeout=60, **extra):
        req = {"type": "run", "run_id": run_id, "flow_name": flow_name, "params": params or {},
               "workflow_yaml": workflow_yaml}
        req.update(extra)
        self.send(req)
        events = self.wait_for(lambda m: m.get("type") == "run_finished" and m.get("run_id") == run_id, timeout)
        return events, events[-1]

    def close(self, timeout=10):
        try:
            if self.proc.poll() is None and not self.proc.stdin.closed:
                self.send({"type": "shutdown"})
            self.proc.wait(timeout=timeout)
        except Exception:  # noqa: BLE001
            pass
        finally:
            try:
                self.proc.stdin.close()
            except Exception:  # noqa: BLE001
                pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out_thread.join(timeout=5)
            self._err_thread.join(timeout=5)
            for stream in (self.proc.stdout, self.proc.stderr):
                try:
                    stream.close()
                except Exception:  # noqa: BLE001
                    pass


def yaml_doc(graph, tasks=None, defaults=None, extra=""):
    """Small flow.yaml builder (tasks: name -> callable or dict)."""
    lines = ["version: 1", "flow:", "  graph: |"]
    for g in textwrap.dedent(graph).strip().splitlines():
        lines.append("    " + g)
    if defaults:
        lines.append("  defaults:")
        for k, v in defaults.items():
            lines.append("    %s: %s" % (k, json.dumps(v)))
    if tasks:
        lines.append("tasks:")
        for name, conf in tasks.items():
            lines.append("  %s:" % name)
            if isinstance(conf, str):
                conf = {"callable": conf}
            for key, value in conf.items():
                lines.append("    %s: %s" % (key, json.dumps(value)))
    text = "\n".join(lines) + "\n"
    if extra:
        text += textwrap.dedent(extra)
    return text


class RunnerTestCase(unittest.TestCase):
    """Base class: temp dir with task modules, one shared runner per class."""

    runner_env = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="pyoco-runner-test-"))
        cls.mods = write_task_modules(cls.tmp / "mods")
        cls.cwd = cls.tmp / "cwd"
        cls.cwd.mkdir()
        cls.runner = cls.start_runner()

    @classmethod
    def start_runner(cls, env=None, **kwargs):
        merged = dict(cls.runner_env or {})
        merged.update(env or {})
        return RunnerProcess(cls.cwd, pythonpath=[cls.mods], env=merged, **kwargs)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.runner.close()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        # The protocol stream must never contain anything but protocol lines.
        self.assertEqual(self.runner.bad_lines, [], "non-protocol output on stdout")

    def run_flow(self, run_id, yaml_text=None, **kwargs):
        return self.runner.run(run_id, yaml_text, **kwargs)
