"""End-to-end tests of pyoco_runner.py through its stdin/stdout protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import unittest
import uuid
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import RESOLVER_FILE, RunnerProcess, RunnerTestCase, yaml_doc  # noqa: E402

README_YAML = yaml_doc(
    "t1 >> t2",
    tasks={
        "t1": {"callable": "rt_tasks:add_one"},
        "t2": {"callable": "rt_tasks:to_text", "inputs": {"value": "$node.t1.output"}},
    },
    defaults={"x": 1},
)


def rid():
    return str(uuid.uuid4())


LINUX = sys.platform.startswith("linux")

# Tasks for the cancel / process tests (written next to the harness's modules).
CANCEL_TASKS = '''
import json
import os
import select
import subprocess
import sys
import threading
import time


def sleeper(seconds=30.0):
    time.sleep(seconds)
    return "slept"


def swallow(seconds=30.0):
    try:
        time.sleep(seconds)
    except Exception:
        return "swallowed"
    return "slept"


def catch_cancel(seconds=30.0):
    try:
        time.sleep(seconds)
    except BaseException as exc:  # the task decides to end cleanly
        return type(exc).__name__
    return "slept"


def busy(seconds=30.0):
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
    return n


def blocked_select(seconds=30.0):
    select.select([], [], [], seconds)  # the original blocking call, no sleep() involved
    return "woke"


def sub_sleep(seconds=30):
    subprocess.run(["sleep", str(seconds)])
    return "done"


def sleep_semantics():
    out = {}
    for arg in (-1, "1", None, float("nan"), 10 ** 30):
        try:
            time.sleep(arg)
            out[repr(arg)] = "ok"
        except BaseException as exc:
            out[repr(arg)] = "%s: %s" % (type(exc).__name__, exc)
    t0 = time.monotonic()
    time.sleep(0.05)
    time.sleep(0)
    time.sleep(False)  # bool is an int
    out["slept"] = time.monotonic() - t0
    out["name"] = time.sleep.__name__
    out["thread"] = threading.current_thread().name
    return out


def exit_status(code=7):
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(%d)" % code]).wait()


def _write_pids(pidfile, pids):
    tmp = pidfile + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(pids, fh)
    os.replace(tmp, pidfile)


def _devnull():
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)


def _double_fork_sleep():
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            grandchild = os.fork()
            if grandchild == 0:
                os.setsid()
                _devnull()
                os.execvp("sleep", ["sleep", "300"])
            os.write(w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 64)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(child, 0)
    return int(data)


def spawn_strays(pidfile, hold=30.0):
    """A setsid'd child (Popen start_new_session) and a double-forked, setsid'd
    grandchild, both `sleep 300`; then block for `hold` seconds."""
    popen = subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    orphan = _double_fork_sleep()
    _write_pids(pidfile, {"session": popen.pid, "orphan": orphan})
    if hold:
        time.sleep(hold)
    return [popen.pid, orphan]
'''


def proc_stat(pid):
    """(state, ppid) of a process, or None when it does not exist."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[1])


def wait_gone(pids, timeout=3.0, zombie_ok=()):
    """True once none of `pids` exists any more (zombies included, except for
    the pids in `zombie_ok`, whose parent is not ours to control)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        states = [(p, proc_stat(p)) for p in pids]
        if all(st is None or (p in zombie_ok and st[0] == "Z") for p, st in states):
            return True
        time.sleep(0.02)
    return False


def read_pids(path, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError("task never wrote %s" % path)


def kill_quietly(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def types_of(events):
    return [e["type"] for e in events]


class ProtocolBasics(RunnerTestCase):
    def test_ready(self):
        ready = self.runner.ready
        self.assertEqual(ready["type"], "ready")
        self.assertEqual(ready["protocol"], 1)
        if sys.platform.startswith("linux"):
            # The spawned process is the guard; `pid` is the runner it forked.
            self.assertEqual(ready["guard_pid"], self.runner.proc.pid)
            self.assertNotEqual(ready["pid"], ready["guard_pid"])
            self.assertEqual(proc_stat(ready["pid"])[1], ready["guard_pid"])
        else:
            self.assertIsNone(ready["guard_pid"])
            self.assertEqual(ready["pid"], self.runner.proc.pid)
        self.assertEqual(ready["pyoco"], "0.8.0")
        self.assertRegex(ready["python"], r"^3\.\d+\.\d+")
        self.assertEqual(ready["max_task_output_bytes"], 65536)
        self.assertEqual(Path(ready["cwd"]).resolve(), self.cwd.resolve())

    def test_ping(self):
        self.runner.send({"type": "ping", "id": 7})
        msg = self.runner.next()
        self.assertEqual(msg, {"type": "pong", "id": 7, "busy": False, "run_id": None})

    def test_bad_lines_do_not_kill_runner(self):
        self.runner.send(b"this is not json\n")
        self.assertEqual(self.runner.next()["type"], "error")
        self.runner.send(b"[1,2]\n")
        self.assertEqual(self.runner.next()["type"], "error")
        self.runner.send({"type": "frobnicate", "id": "x"})
        msg = self.runner.next()
        self.assertEqual((msg["type"], msg["id"], msg["request_type"]), ("error", "x", "frobnicate"))
        _, fin = self.runner.run(rid(), None, params=[1, 2])
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "invalid_request"))
        _, fin = self.runner.run("", README_YAML)
        self.assertEqual(fin["error_kind"], "invalid_request")
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1})
        self.assertEqual(fin["status"], "COMPLETED")


class ReadmeExample(RunnerTestCase):
    def test_two_task_flow(self):
        run_id = rid()
        events, fin = self.run_flow(run_id, README_YAML, params={"x": 1})
        # `log` events (the live log, batched by time) come between the others
        self.assertEqual(
            [t for t in types_of(events) if t != "log"],
            ["run_started", "task_started", "task_finished",
             "task_started", "task_finished", "run_finished"],
        )
        # Each task_finished carries that task's whole record, equal to what run_finished
        # reports for it (no `snapshot` of every task after each one).
        for ev in [e for e in events if e["type"] == "task_finished"]:
            self.assertEqual(ev["record"], fin["task_records"][ev["task"]])
        self.assertEqual([l[1:] for l in log_lines(events)], [["stdout", "t1", "adding 1"]])
        started = events[0]
        self.assertEqual(started["run_id"], run_id)
        self.assertEqual(started["flow_name"], "main")
        self.assertEqual(started["status"], "RUNNING")
        self.assertEqual(started["graph_mode"], "expression")
        self.assertEqual(started["tasks"], {"t1": "PENDING", "t2": "PENDING"})
        self.assertEqual(list(started["tasks"]), ["t1", "t2"])  # graph order
        self.assertEqual(started["edges"], [["t1", "t2"]])
        self.assertEqual(fin["status"], "COMPLETED")
        self.assertIsNone(fin["error"])
        self.assertIsNone(fin["error_kind"])
        self.assertEqual(fin["tasks"], {"t1": "SUCCEEDED", "t2": "SUCCEEDED"})
        rec1, rec2 = fin["task_records"]["t1"], fin["task_records"]["t2"]
        self.assertEqual(rec1["output"], 2)
        self.assertEqual(rec1["inputs"], {"x": 1})
        self.assertEqual(rec2["output"], {"text": "v=2", "by_name": 2})
        self.assertEqual(rec2["inputs"], {"value": 2, "t1": 2})
        for rec in (rec1, rec2):
            self.assertEqual(
                set(rec),
                {"state", "started_at", "ended_at", "duration_ms", "error", "traceback", "inputs", "output",
                 "artifacts", "stdout", "stderr"},
            )
            self.assertEqual(rec["state"], "SUCCEEDED")
            self.assertGreaterEqual(rec["ended_at"], rec["started_at"])
        self.assertEqual(rec1["stdout"], "adding 1\n")
        self.assertLessEqual(fin["start_time"], rec1["started_at"])
        self.assertGreaterEqual(fin["end_time"], rec2["ended_at"])
        t1_done = events[2]
        self.assertEqual((t1_done["task"], t1_done["state"], t1_done["stdout"]), ("t1", "SUCCEEDED", "adding 1\n"))
        self.assertEqual((t1_done["record"]["state"], t1_done["record"]["output"]), ("SUCCEEDED", 2))
        self.assertEqual(t1_done["record"]["stdout"], "adding 1\n")
        self.assertTrue((self.cwd / "artifacts").is_dir())  # pyoco's Engine side effect

    def test_params_are_not_merged_with_defaults(self):
        # defaults say x: 1 but the job params win; missing x is not filled in.
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 41})
        self.assertEqual(fin["task_records"]["t2"]["output"]["text"], "v=42")
        _, fin = self.run_flow(rid(), README_YAML, params={})
        self.assertEqual(fin["status"], "FAILED")
        self.assertEqual(fin["error_kind"], "execution_error")
        self.assertIn("x", fin["error"])

    def test_flow_name_is_used(self):
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1}, flow_name="hello")
        self.assertEqual(fin["flow_name"], "hello")

    def test_fifty_runs_in_one_process(self):
        pid = self.runner.proc.pid
        for i in range(50):
            _, fin = self.run_flow(rid(), README_YAML, params={"x": i})
            self.assertEqual(fin["status"], "COMPLETED")
            self.assertEqual(fin["task_records"]["t1"]["output"], i + 1)
        self.runner.send({"type": "ping"})
        self.assertEqual(self.runner.next()["type"], "pong")
        self.assertEqual(self.runner.proc.pid, pid)
        self.assertIsNone(self.runner.proc.poll())

    def test_a_repeated_flow_yaml_runs_the_same_from_its_cache(self):
        # The validated document and the parsed graph of a repeated text are reused; each run
        # still gets fresh Task objects, its own params and its own records.
        outs = []
        for i in range(3):
            _, fin = self.run_flow(rid(), README_YAML, params={"x": 10 * i})
            self.assertEqual(fin["status"], "COMPLETED")
            outs.append(fin["task_records"]["t2"]["output"]["text"])
        self.assertEqual(outs, ["v=1", "v=11", "v=21"])
        # A refused text is refused the same way every time (the cached failure is raised
        # afresh, not re-raised with a growing traceback).
        bad = "version: 1\nflow:\n  graph: '__import__(\"os\")'\ntasks: {}\n"
        errors = []
        for _ in range(3):
            _, fin = self.run_flow(rid(), bad)
            errors.append((fin["status"], fin["error_kind"], fin["error"]))
        self.assertEqual(len(set(errors)), 1, errors)
        self.assertEqual(errors[0][:2], ("FAILED", "invalid_workflow"))


class Failures(RunnerTestCase):
    def test_task_raises(self):
        y = yaml_doc("t1 >> bad >> t3", tasks={"t1": "rt_tasks:pick_a", "bad": "rt_tasks:boom", "t3": "rt_tasks:pick_b"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "FAILED")
        self.assertEqual(fin["error_kind"], "execution_error")
        self.assertEqual(fin["error"], "kaboom")
        self.assertEqual(fin["tasks"], {"t1": "SUCCEEDED", "bad": "FAILED", "t3": "PENDING"})
        rec = fin["task_records"]["bad"]
        self.assertEqual(rec["error"], "kaboom")
        self.assertIn("ValueError: kaboom", rec["traceback"])
        self.assertIn("ValueError: kaboom", fin["traceback"])
        finished = [e for e in events if e["type"] == "task_finished" and e["task"] == "bad"]
        self.assertEqual(len(finished), 1)
        self.assertEqual((finished[0]["state"], finished[0]["error"]), ("FAILED", "kaboom"))
        self.assertEqual(finished[0]["record"]["error"], "kaboom")
        self.assertIn("ValueError: kaboom", finished[0]["record"]["traceback"])
        self.assertNotIn("snapshot", types_of(events))

    def test_unknown_module(self):
        y = yaml_doc("t1 >> t2", tasks={"t1": "no_such_module_xyz:run", "t2": "rt_tasks:pick_a"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(types_of(events), ["run_finished"])
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "import_error"))
        self.assertIn("no_such_module_xyz", fin["error"])
        self.assertIn("ModuleNotFoundError", fin["error"])
        self.assertIn("'t1'", fin["error"])
        self.assertNotIn("is not defined", fin["error"])
        self.assertTrue(fin["error"].startswith("import_error: "))

    def test_missing_attribute_and_failing_module(self):
        y = yaml_doc("t1", tasks={"t1": "rt_tasks:does_not_exist"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["error_kind"], "import_error")
        self.assertIn("rt_tasks", fin["error"])
        self.assertIn("does_not_exist", fin["error"])
        y = yaml_doc("t1", tasks={"t1": "rt_badimport:x"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["error_kind"], "import_error")
        self.assertIn("RuntimeError: module fails at import time", fin["error"])

    def test_unreferenced_broken_task_is_ignored(self):
        y = yaml_doc("t1", tasks={"t1": "rt_tasks:pick_a", "unused": "no_such_module_xyz:run"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED")
        self.assertEqual(fin["tasks"], {"t1": "SUCCEEDED"})

    def test_unknown_task(self):
        y = yaml_doc("t1 >> ghost", tasks={"t1": "rt_tasks:pick_a"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "unknown_task"))
        self.assertIn("'ghost'", fin["error"])

    def test_task_without_callable_not_discovered(self):
        y = yaml_doc("t1", tasks={"t1": {"inputs": {"a": 1}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["error_kind"], "unknown_task")
        self.assertIn("without 'callable'", fin["error"])

    def test_invalid_yaml(self):
        cases = {
            "version: 1\nflow: [\n": "invalid_yaml",
            "- a\n- b\n": "invalid_yaml_root",
            "flows: {}\n": "unsupported_key_flows",
            "discovery: {}\nflow: {graph: t1}\n": "unsupported_key_discovery",
            "flow: {graph: t1}\nextra: 1\npipes: {}\n": "unknown_top_level_keys: ['extra', 'pipes']",
            "version: 1\n": "missing_flow",
            "flow: 3\n": "invalid_flow",
            "flow: {graph: t1, other: 1}\n": "unknown_flow_keys: ['other']",
            "flow: {graph: ''}\n": "missing_flow_graph",
            "flow: {graph: t1, defaults: [1]}\n": "invalid_flow_defaults",
            "flow: {graph: t1}\ntasks: [1]\n": "invalid_tasks",
            "flow: {graph: t1}\ntasks: {t1: 5}\n": "invalid_task_config: t1",
            "flow: {graph: t1}\ntasks: {t1: {use: x}}\n": "unknown_task_keys: t1: ['use']",
            "flow: {graph: t1}\ntasks: {t1: {callable: nocolon}}\n": "invalid_task_callable: t1",
            "flow: {graph: t1}\ntasks: {t1: {callable: 'a:b', inputs: [1]}}\n": "invalid_task_inputs: t1",
            "flow: {graph: t1}\ntasks: {t1: {callable: 'a:b', outputs: [1]}}\n": "invalid_task_outputs: t1",
            "flow: {graph: t1}\nruntime: 1\n": "invalid_runtime",
            "flow: {graph: t1}\nruntime: {x: 1}\n": "unknown_runtime_keys: ['x']",
            "flow: {graph: t1}\nruntime: {expose_env: 1}\n": "invalid_runtime_expose_env",
            "version: abc\nflow: {graph: t1}\n": "invalid_version",
        }
        for text, reason in cases.items():
            with self.subTest(reason=reason):
                _, fin = self.run_flow(rid(), text)
                self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "invalid_workflow"))
                self.assertTrue(fin["error"].startswith("invalid workflow yaml: " + reason), fin["error"])

    def test_task_calling_sys_exit(self):
        y = yaml_doc("t1 >> t2", tasks={"t1": "rt_tasks:exits", "t2": "rt_tasks:pick_a"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "execution_error"))
        self.assertEqual(fin["error"], "3")
        self.assertEqual(fin["tasks"]["t1"], "FAILED")
        self.assertEqual(fin["task_records"]["t1"]["state"], "FAILED")
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1})
        self.assertEqual(fin["status"], "COMPLETED")

    def test_process_state_is_restored_between_runs(self):
        y = yaml_doc("v", tasks={"v": "rt_tasks:vandal"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED")
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1})
        self.assertEqual(fin["task_records"]["t1"]["stdout"], "adding 1\n")
        self.runner.send({"type": "ping"})
        self.assertEqual(self.runner.next()["type"], "pong")

    def test_non_json_values(self):
        y = yaml_doc("a >> b", tasks={"a": "rt_tasks:nonjson", "b": "rt_tasks:nan_out"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED")
        self.assertEqual(fin["task_records"]["a"]["output"], "{'s': {1, 2}}")
        self.assertEqual(fin["task_records"]["b"]["output"], "nan")

    def test_stdin_is_not_the_protocol(self):
        y = yaml_doc("t1", tasks={"t1": "rt_tasks:reads_stdin"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["task_records"]["t1"]["output"], "")
        self.runner.send({"type": "ping", "id": "after-stdin"})
        self.assertEqual(self.runner.next()["id"], "after-stdin")


class GraphSafety(RunnerTestCase):
    def setUp(self):
        self.marker = self.tmp / ("pwned-%s" % uuid.uuid4().hex)

    def tearDown(self):
        super().tearDown()
        self.assertFalse(self.marker.exists(), "graph text was executed!")

    def _assert_rejected(self, graph, kinds=("invalid_workflow", "unknown_task")):
        y = yaml_doc(graph, tasks={"t1": "rt_tasks:pick_a"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "FAILED", graph)
        self.assertIn(fin["error_kind"], kinds, (graph, fin["error"]))
        self.assertNotIn("run_started", types_of(events))
        return fin

    def test_injection_payloads_do_not_execute(self):
        m = str(self.marker)
        payloads = [
            "__import__('os').system('touch %s')" % m,
            "t1 >> __import__('os').system('touch %s')" % m,
            "exec(\"open('%s','w')\")" % m,
            "eval(\"open('%s','w')\")" % m,
            "open('%s', 'w')" % m,
            "import os\nos.system('touch %s')" % m,
            "t1 >> [open('%s','w') for _ in (1,)]" % m,
            "t1 >> (lambda: open('%s','w'))()" % m,
            "t1.__class__.__init__.__globals__['os'].system('touch %s')" % m,
            "t1 >> switch(open('%s','w'))" % m,
            "x = open('%s','w')" % m,
            "t1 >> {{ __import__('os').system('touch %s') }}" % m,
            "t1 >> f'{open(\"%s\", \"w\")}'" % m,
            "t1 >> ('%%999999999s' %% t1)",
            "t1 >> ('%%s' %% 1)",
        ]
        for graph in payloads:
            with self.subTest(graph=graph):
                self._assert_rejected(graph)

    def test_rejection_message_names_the_problem(self):
        fin = self._assert_rejected("__import__('os').system('true')")
        self.assertIn("invalid_workflow: graph:", fin["error"])
        self.assertIn("__import__", fin["error"])

    def test_unknown_names_are_unknown_tasks(self):
        fin = self._assert_rejected("t1 >> os >> sys")
        self.assertEqual(fin["error_kind"], "unknown_task")
        self.assertIn("'os'", fin["error"])


class GraphFeatures(RunnerTestCase):
    def test_edges_describe_a_diamond(self):
        y = yaml_doc("a >> b\na >> c\nb >> d\nc >> d",
                     tasks={n: "rt_tasks:pick_a" for n in "abcd"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(events[0]["edges"], [["a", "b"], ["a", "c"], ["b", "d"], ["c", "d"]])

    def test_parallel_and_join(self):
        y = yaml_doc("(a & b) >> c", tasks={"a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b", "c": "rt_tasks:tag"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED")
        recs = fin["task_records"]
        self.assertGreaterEqual(recs["c"]["started_at"], max(recs["a"]["ended_at"], recs["b"]["ended_at"]))

    def test_multi_statement_and_flow_recording(self):
        y = yaml_doc("flow >> a >> b\n", tasks={"a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["tasks"], {"a": "SUCCEEDED", "b": "SUCCEEDED"})
        y = yaml_doc("a >> b\na >> c", tasks={"a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b", "c": "rt_tasks:tag"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["tasks"], {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"})

    def test_expression_switch(self):
        y = yaml_doc(
            'flow >> choose >> switch("$ctx.params.mode")["x" >> a, "*" >> b]',
            tasks={"choose": "rt_tasks:choose", "a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b"},
        )
        _, fin = self.run_flow(rid(), y, params={"mode": "x"})
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(fin["tasks"], {"choose": "SUCCEEDED", "a": "SUCCEEDED", "b": "PENDING"})
        _, fin = self.run_flow(rid(), y, params={"mode": "other"})
        self.assertEqual(fin["tasks"], {"choose": "SUCCEEDED", "a": "PENDING", "b": "SUCCEEDED"})

    def test_repeat_expression(self):
        y = yaml_doc("flow >> t[2]", tasks={"t": "rt_tasks:tag"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(len([e for e in events if e["type"] == "task_started"]), 2)
        self.assertEqual(fin["task_records"]["t"]["stdout"], "tag ?\ntag ?\n")

    def test_foreach_until_and_any_of(self):
        y = yaml_doc('flow >> t["$ctx.params.items as it"]', tasks={"t": "rt_tasks:tag"})
        events, fin = self.run_flow(rid(), y, params={"items": [1, 2, 3]})
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(len([e for e in events if e["type"] == "task_finished"]), 3)
        y = yaml_doc('flow >> a % "$ctx.results.a == \'A\'"', tasks={"a": "rt_tasks:pick_a"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        y = yaml_doc("(a | b) >> c", tasks={"a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b", "c": "rt_tasks:tag"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["tasks"], {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"})

    def test_pyoco_graph_dsl_fallback(self):
        y = yaml_doc(
            """
            choose
            >> switch(on={{mode}}){
              x: first: pick_a >> second: pick_a;
              default: pick_b
            }
            """,
            tasks={"choose": "rt_tasks:choose", "pick_a": "rt_tasks:pick_a", "pick_b": "rt_tasks:pick_b"},
        )
        events, fin = self.run_flow(rid(), y, params={"mode": "x"})
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(events[0]["graph_mode"], "pyoco_dsl")
        self.assertEqual(fin["tasks"], {"choose": "SUCCEEDED", "first": "SUCCEEDED", "second": "SUCCEEDED",
                                        "pick_b": "PENDING"})

    def test_dsl_syntax_error_reports_both_parsers(self):
        y = yaml_doc("t1 >>> ", tasks={"t1": "rt_tasks:pick_a"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["error_kind"], "invalid_workflow")
        self.assertIn("SyntaxError", fin["error"])
        self.assertIn("pyoco graph DSL", fin["error"])

    def test_cycle_is_an_execution_error(self):
        y = yaml_doc("a >> b\nb >> a", tasks={"a": "rt_tasks:pick_a", "b": "rt_tasks:pick_b"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "execution_error"))
        self.assertIn("Deadlock or cycle", fin["error"])


class OutputCapture(RunnerTestCase):
    def test_task_output_is_captured_per_task(self):
        y = yaml_doc("n >> u", tasks={"n": "rt_tasks:noisy", "u": "rt_tasks:unicode_out"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        rec = fin["task_records"]["n"]
        self.assertEqual(
            rec["stdout"], "hello from stdout\nraw write\nbytes write\nfrom child thread\n")
        self.assertIn("warn from stderr\n", rec["stderr"])
        self.assertIn("logged warning", rec["stderr"])
        done = [e for e in events if e["type"] == "task_finished" and e["task"] == "n"][0]
        self.assertEqual(done["stdout"], rec["stdout"])
        self.assertEqual(done["stderr"], rec["stderr"])
        self.assertEqual(fin["task_records"]["u"]["stdout"], "h\u00e9llo \u2713\n")
        self.assertEqual(fin["task_records"]["u"]["output"], "\u00fcn\u00ef")
        # fd-level writes (child processes, os.write(1)) are not in the snapshot fields: they
        # reach the live log (LiveLog tests), attributed to the only running task
        self.assertNotIn("from subprocess", rec["stdout"])
        lines = log_lines(events)
        self.assertIn([ "stdout", "n", "from subprocess"], [l[1:] for l in lines])
        self.assertIn([ "stdout", "n", "raw fd1 write"], [l[1:] for l in lines])
        self.assertNotIn("from subprocess", self.runner.stderr_text())
        # every stdout line was pure ASCII JSON (checked by the harness) and
        # nothing the task printed leaked into the protocol stream
        for raw in self.runner.raw_lines:
            self.assertTrue(raw.startswith(b"{"))

    def test_truncation_marker(self):
        y = yaml_doc("s", tasks={"s": {"callable": "rt_tasks:shout", "inputs": {"n": 100000}}})
        _, fin = self.run_flow(rid(), y)
        out = fin["task_records"]["s"]["stdout"]
        self.assertTrue(out.startswith("x" * 65536))
        self.assertEqual(out[65536:], "\u2026[truncated 34464 bytes]")
        _, fin = self.run_flow(rid(), y, max_output_bytes=10)
        self.assertEqual(fin["task_records"]["s"]["stdout"], "x" * 10 + "\u2026[truncated 99990 bytes]")

    def test_values_over_the_record_limit_are_replaced_not_sent(self):
        # 50 MB returned and passed on: the lines stay small, the next task gets the value.
        y = yaml_doc("big >> use", tasks={
            "big": {"callable": "rt_tasks:big_text", "inputs": {"n": 50_000_000}},
            "use": {"callable": "rt_tasks:echo", "inputs": {"value": "$node.big.output"}}})
        n_before = len(self.runner.raw_lines)
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(fin["task_records"]["big"]["output"],
                         "\u2026[output omitted: 50000002 bytes as JSON, over the run snapshot limit of 262144 bytes]")
        self.assertEqual(fin["task_records"]["use"]["inputs"]["value"],
                         "\u2026[input value omitted: 50000002 bytes as JSON, over the run snapshot limit of 262144 bytes]")
        self.assertEqual(fin["task_records"]["use"]["output"], 50_000_000)
        self.assertLess(max(len(l) for l in self.runner.raw_lines[n_before:]), 64 * 1024)
        # A container is measured only up to the limit; a value under it is kept as is.
        y = yaml_doc("l", tasks={"l": {"callable": "rt_tasks:big_list", "inputs": {"n": 300_000}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["task_records"]["l"]["output"],
                         "\u2026[output omitted: more than 262144 bytes as JSON, over the run snapshot limit of 262144 bytes]")
        y = yaml_doc("l", tasks={"l": {"callable": "rt_tasks:big_list", "inputs": {"n": 1000}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["task_records"]["l"]["output"], list(range(1000)))

    @unittest.skipUnless(os.path.exists("/proc/self/statm"), "reads /proc")
    def test_a_big_value_is_freed_once_its_run_is_over(self):
        # A run's objects are reference cycles: without the collection after the run, a task
        # that returned 200 MB kept its runner at 200 MB until Python's next full collection.
        def rss_mib():
            with open("/proc/%d/statm" % self.runner.ready["pid"]) as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1 << 20)

        before = rss_mib()
        y = yaml_doc("b", tasks={"b": {"callable": "rt_tasks:big_text", "inputs": {"n": 200_000_000}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        deadline = time.time() + 5  # collected right after run_finished went out
        while rss_mib() > before + 50 and time.time() < deadline:
            time.sleep(0.05)
        self.assertLess(rss_mib(), before + 50)

    def test_record_value_limit_from_the_env(self):
        runner = self.start_runner(env={"PYOCO_RUNNER_MAX_RECORD_VALUE_BYTES": "10"})
        try:
            self.assertEqual(runner.ready["max_record_value_bytes"], 10)
            y = yaml_doc("a >> b", tasks={"a": {"callable": "rt_tasks:big_text", "inputs": {"n": 8}},
                                          "b": {"callable": "rt_tasks:big_text", "inputs": {"n": 9}}})
            _, fin = runner.run(rid(), y)
            self.assertEqual(fin["task_records"]["a"]["output"], "b" * 8)
            self.assertTrue(fin["task_records"]["b"]["output"].startswith("\u2026[output omitted: 11 bytes"))
        finally:
            runner.close()

    def test_env_limit_and_tee(self):
        runner = self.start_runner(env={"PYOCO_RUNNER_MAX_TASK_OUTPUT_BYTES": "5",
                                        "PYOCO_RUNNER_TEE_TASK_OUTPUT": "1"})
        try:
            self.assertEqual(runner.ready["max_task_output_bytes"], 5)
            _, fin = runner.run(rid(), README_YAML, params={"x": 1})
            self.assertEqual(fin["task_records"]["t1"]["stdout"], "addin\u2026[truncated 4 bytes]")
            deadline = time.time() + 5
            while time.time() < deadline and "adding 1" not in runner.stderr_text():
                time.sleep(0.05)
            self.assertIn("adding 1\n", runner.stderr_text())
            self.assertEqual(runner.bad_lines, [])
        finally:
            runner.close()

    def test_output_outside_tasks_is_unattributed(self):
        y = yaml_doc("t1 >> t2", tasks={"t1": "rt_tasks:pick_a", "t2": "rt_tasks:pick_b"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["unattributed"], {"stdout": "", "stderr": ""})
        # module import happens while building the flow: not inside a task
        y = yaml_doc("t1", tasks={"t1": "rt_loud:fn"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["unattributed"], {"stdout": "loud module imported\n", "stderr": "loud module stderr\n"})
        self.assertEqual(fin["task_records"]["t1"]["stdout"], "")
        self.assertIn("loud module imported", self.runner.stderr_text())

    def test_parallel_tasks_output_is_not_mixed(self):
        labels = ["p%d" % i for i in range(6)]
        tasks = {l: {"callable": "rt_tasks:chatter", "inputs": {"label": l, "n": 200}} for l in labels}
        tasks["j"] = "rt_tasks:pick_a"
        # pyoco's `a & b` only joins two operands; fan-in of six = six statements
        y = yaml_doc("\n".join("%s >> j" % l for l in labels), tasks=tasks)
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        for l in labels:
            expected = "".join("%s %d\n" % (l, i) for i in range(200))
            self.assertEqual(fin["task_records"][l]["stdout"], expected)


def log_lines(events):
    """Every line of the run's `log` events, as [ts, stream, task, line]."""
    out = []
    for e in events:
        if e["type"] == "log":
            out.extend(e["lines"])
    return out


class LiveLog(RunnerTestCase):
    def test_python_and_fd_level_lines_with_task_and_stream(self):
        y = yaml_doc("n >> u", tasks={"n": "rt_tasks:noisy", "u": "rt_tasks:unicode_out"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        lines = [l[1:] for l in log_lines(events)]
        for want in (["stdout", "n", "hello from stdout"], ["stderr", "n", "warn from stderr"],
                     ["stdout", "n", "bytes write"], ["stdout", "n", "from child thread"],
                     ["stdout", "n", "from subprocess"], ["stdout", "n", "raw fd1 write"],
                     ["stdout", "u", "h\u00e9llo \u2713"]):
            self.assertIn(want, lines)
        # every log event precedes run_finished, which counts them
        self.assertEqual(fin["log"]["lines"], len(lines))
        self.assertEqual(fin["log"]["dropped_lines"], 0)
        last_log = max(i for i, e in enumerate(events) if e["type"] == "log")
        self.assertLess(last_log, events.index(fin))
        for l in log_lines(events):
            self.assertIsInstance(l[0], float)

    def test_subprocess_stderr_and_a_partial_last_line(self):
        y = yaml_doc("s", tasks={"s": "rt_tasks:subproc_mixed"})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        lines = [l[1:] for l in log_lines(events)]
        self.assertIn(["stderr", "s", "child err"], lines)
        self.assertIn(["stdout", "s", "child out"], lines)
        self.assertIn(["stdout", "s", "no newline"], lines)
        self.assertIn(["stdout", "s", "py partial"], lines)

    def test_lines_arrive_while_the_task_runs(self):
        y = yaml_doc("t", tasks={"t": {"callable": "rt_tasks:ticker", "inputs": {"n": 5, "every": 0.2}}})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        logs = [e for e in events if e["type"] == "log"]
        self.assertGreaterEqual(len(logs), 3, logs)  # not one batch at the end
        lines = log_lines(events)
        self.assertEqual([l[3] for l in lines], ["tick %d" % i for i in range(5)])
        # ts = when the line was written (0.2 s apart), not when the batch went out
        gaps = [b[0] - a[0] for a, b in zip(lines, lines[1:])]
        self.assertTrue(all(0.15 < g < 0.5 for g in gaps), gaps)

    def test_per_run_limit_drops_and_counts(self):
        y = yaml_doc("m", tasks={"m": {"callable": "rt_tasks:many", "inputs": {"n": 200000}}})
        events, fin = self.run_flow(rid(), y, log_max_bytes=100000)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        lines = log_lines(events)
        total = sum(len(l[3]) for l in lines)
        self.assertLessEqual(total, 100000)
        self.assertGreater(total, 90000)
        self.assertEqual(fin["log"]["lines"], len(lines))
        self.assertEqual(fin["log"]["lines"] + fin["log"]["dropped_lines"], 200000)
        self.assertGreater(fin["log"]["dropped_bytes"], 0)

    def test_long_lines_are_cut(self):
        y = yaml_doc("s", tasks={"s": {"callable": "rt_tasks:shout", "inputs": {"n": 100000}}})
        events, fin = self.run_flow(rid(), y)
        lines = log_lines(events)
        self.assertEqual(len(lines), 1)
        self.assertEqual(lines[0][3], "x" * 16384 + "\u2026[line cut at 16384 bytes]")

    def test_an_endless_line_is_cut_once_and_its_rest_dropped(self):
        y = yaml_doc("s", tasks={"s": {"callable": "rt_tasks:endless_line", "inputs": {"n": 2000}}})
        events, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        lines = [l[3] for l in log_lines(events)]
        self.assertEqual(lines, ["y" * 16384 + "\u2026[line cut at 16384 bytes]", "after"])

    def test_zero_disables_the_live_log(self):
        y = yaml_doc("n", tasks={"n": "rt_tasks:noisy"})
        events, fin = self.run_flow(rid(), y, log_max_bytes=0)
        self.assertEqual(log_lines(events), [])
        self.assertNotIn("log", fin)


class Cancel(RunnerTestCase):
    def _flow(self, seconds):
        return yaml_doc(
            "s1 >> t2 >> t3",
            tasks={"s1": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": seconds}},
                   "t2": "rt_tasks:pick_a", "t3": "rt_tasks:pick_b"},
        )

    def test_cancel_during_first_task(self):
        run_id = rid()
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                          "workflow_yaml": self._flow(30.0)})
        before = self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s1")
        self.runner.send({"type": "ping"})
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id, "id": 1})
        events = self.runner.wait_for(lambda m: m["type"] == "run_finished")
        fin = events[-1]
        acks = [e for e in events if e["type"] == "cancel_ack"]
        self.assertEqual(len(acks), 1)
        self.assertEqual((acks[0]["result"], acks[0]["accepted"], acks[0]["id"]), ("cancelling", True, 1))
        pong = [e for e in events if e["type"] == "pong"][0]
        self.assertEqual((pong["busy"], pong["run_id"]), (True, run_id))
        snaps = [e for e in events if e["type"] == "snapshot"]
        self.assertEqual(snaps[0]["status"], "CANCELLING")
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertIsNone(fin["error"])
        self.assertTrue(fin["cancel_requested"])
        # s1 was blocked in time.sleep(30): the cancel interrupted it
        self.assertEqual(fin["tasks"], {"s1": "CANCELLED", "t2": "CANCELLED", "t3": "CANCELLED"})
        self.assertEqual(fin["task_records"]["t2"]["state"], "CANCELLED")
        rec = fin["task_records"]["s1"]
        self.assertEqual(rec["state"], "CANCELLED")
        self.assertIsNotNone(rec["ended_at"])
        self.assertIsNone(rec["error"])
        cancelled = [e for e in events if e["type"] == "task_finished" and e["state"] == "CANCELLED"]
        self.assertEqual(sorted(e["task"] for e in cancelled), ["s1", "t2", "t3"])
        s1_done = [e for e in cancelled if e["task"] == "s1"][0]
        self.assertIsInstance(s1_done["duration_ms"], float)
        self.assertEqual(s1_done["at"], rec["ended_at"])
        self.assertNotIn("t2", [e.get("task") for e in before + events if e["type"] == "task_started"])
        self.assertLess(time.time() - t0, 2.5)

    def test_cancel_in_control_flow_mode(self):
        run_id = rid()
        y = yaml_doc(
            "flow >> s1 >> t2[2] >> t3",
            tasks={"s1": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": 30}},
                   "t2": "rt_tasks:pick_a", "t3": "rt_tasks:pick_b"},
        )
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {}, "workflow_yaml": y})
        self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s1")
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertLess(time.time() - t0, 2.5)
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertEqual(fin["tasks"], {"s1": "CANCELLED", "t2": "CANCELLED", "t3": "CANCELLED"})

    def test_cancel_before_run_arrives(self):
        run_id = rid()
        marker = self.tmp / ("never-%s" % uuid.uuid4().hex)
        self.runner.send({"type": "cancel", "run_id": run_id})
        ack = self.runner.next()
        self.assertEqual((ack["type"], ack["result"], ack["accepted"]), ("cancel_ack", "not_running", False))
        y = yaml_doc("t", tasks={"t": {"callable": "rt_tasks:touch", "inputs": {"path": str(marker)}}})
        events, fin = self.run_flow(run_id, y)
        self.assertEqual(types_of(events), ["run_finished"])
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertFalse(marker.exists())

    def test_cancel_during_last_task_cancels(self):
        # Before the interrupting cancel this run ended COMPLETED (pyoco leaves
        # it CANCELLING); now an accepted cancel never ends COMPLETED.
        run_id = rid()
        y = yaml_doc("t1 >> s", tasks={"t1": "rt_tasks:pick_a",
                                       "s": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": 30}}})
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {}, "workflow_yaml": y})
        self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s")
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertTrue(fin["cancel_requested"])
        self.assertIsNone(fin["error"])
        self.assertEqual(fin["tasks"], {"t1": "SUCCEEDED", "s": "CANCELLED"})

    def test_cancel_other_run_id_does_not_affect_current(self):
        run_id = rid()
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                          "workflow_yaml": self._flow(0.3)})
        self.runner.wait_for(lambda m: m["type"] == "task_started")
        self.runner.send({"type": "cancel", "run_id": "someone-else"})
        events = self.runner.wait_for(lambda m: m["type"] == "run_finished")
        self.assertEqual(events[-1]["status"], "COMPLETED")


class CancelInterrupts(RunnerTestCase):
    """A cancel interrupts tasks that block (issue "Hardening", item 5)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        (cls.mods / "rt_cancel.py").write_text(textwrap.dedent(CANCEL_TASKS), encoding="utf-8")

    def _start(self, graph, tasks, params=None):
        run_id = rid()
        y = yaml_doc(graph, tasks=tasks)
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": params or {},
                          "workflow_yaml": y})
        return run_id

    def _cancel_after_start(self, run_id, task, limit=2.0):
        self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == task)
        time.sleep(0.05)  # let the task reach its blocking call
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id})
        events = self.runner.wait_for(lambda m: m["type"] == "run_finished" and m["run_id"] == run_id)
        took = time.time() - t0
        self.assertLess(took, limit, "the cancel took %.2f s" % took)
        fin = events[-1]
        self.assertEqual(fin["status"], "CANCELLED", fin["error"])
        self.assertIsNone(fin["error"])
        self.assertIsNone(fin["error_kind"])
        self.assertTrue(fin["cancel_requested"])
        return events, fin

    def _assert_next_run_completes(self, seconds=0.1):
        y = yaml_doc("(a & b) >> c", tasks={"a": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": seconds}},
                                          "b": {"callable": "rt_cancel:busy", "inputs": {"seconds": seconds}},
                                          "c": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": seconds / 2}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(fin["tasks"], {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"})
        self.assertFalse(fin["cancel_requested"])

    def test_sleep_in_pool_thread_is_interrupted_and_next_run_is_normal(self):
        run_id = self._start("s >> t", {"s": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": 30}},
                                        "t": "rt_tasks:pick_a"})
        events, fin = self._cancel_after_start(run_id, "s")
        self.assertEqual(fin["tasks"], {"s": "CANCELLED", "t": "CANCELLED"})
        rec = fin["task_records"]["s"]
        self.assertEqual(rec["state"], "CANCELLED")
        self.assertIsNotNone(rec["ended_at"])
        self.assertIsNone(rec["output"])
        self.assertLess(rec["duration_ms"], 2500)
        done = [e for e in events if e["type"] == "task_finished" and e["task"] == "s"]
        self.assertEqual(len(done), 1)
        self.assertEqual((done[0]["state"], done[0]["error"]), ("CANCELLED", None))
        self._assert_next_run_completes()

    def test_sleep_in_main_thread_is_interrupted(self):
        # `s[1]` (repeat) makes it a control-flow program: pyoco runs it in the main thread
        run_id = self._start("flow >> s[1] >> t", {"s": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": 30}},
                                                "t": "rt_tasks:pick_a"})
        _, fin = self._cancel_after_start(run_id, "s")
        self.assertEqual(fin["tasks"], {"s": "CANCELLED", "t": "CANCELLED"})
        self._assert_next_run_completes()

    def test_busy_loop_is_interrupted(self):
        for graph in ("b >> t", "flow >> b[1] >> t"):  # pool thread (async exception), main thread (signal)
            with self.subTest(graph=graph):
                run_id = self._start(graph, {"b": {"callable": "rt_cancel:busy", "inputs": {"seconds": 30}},
                                             "t": "rt_tasks:pick_a"})
                _, fin = self._cancel_after_start(run_id, "b")
                self.assertEqual(fin["tasks"], {"b": "CANCELLED", "t": "CANCELLED"})
        self._assert_next_run_completes()

    def test_except_exception_does_not_swallow_the_cancel(self):
        run_id = self._start("w", {"w": {"callable": "rt_cancel:swallow", "inputs": {"seconds": 30}}})
        _, fin = self._cancel_after_start(run_id, "w")
        self.assertEqual(fin["tasks"], {"w": "CANCELLED"})
        self.assertIsNone(fin["task_records"]["w"]["output"])

    def test_task_may_catch_the_cancel_and_return(self):
        run_id = self._start("c >> t", {"c": {"callable": "rt_cancel:catch_cancel", "inputs": {"seconds": 30}},
                                        "t": "rt_tasks:pick_a"})
        _, fin = self._cancel_after_start(run_id, "c")
        self.assertEqual(fin["tasks"], {"c": "SUCCEEDED", "t": "CANCELLED"})
        self.assertEqual(fin["task_records"]["c"]["output"], "TaskCancelled")

    def test_blocking_system_call_in_main_thread_is_interrupted(self):
        run_id = self._start("flow >> s[1]", {"s": {"callable": "rt_cancel:blocked_select", "inputs": {"seconds": 30}}})
        _, fin = self._cancel_after_start(run_id, "s")
        self.assertEqual(fin["tasks"], {"s": "CANCELLED"})

    @unittest.skipUnless(LINUX, "child processes are signalled on Linux only")
    def test_subprocess_wait_is_interrupted(self):
        for graph in ("s", "flow >> s[1]"):
            with self.subTest(graph=graph):
                run_id = self._start(graph, {"s": {"callable": "rt_cancel:sub_sleep", "inputs": {"seconds": 30}}})
                _, fin = self._cancel_after_start(run_id, "s")
                self.assertEqual(fin["tasks"], {"s": "CANCELLED"})
        self._assert_next_run_completes()

    def test_parallel_tasks_are_all_interrupted(self):
        run_id = self._start("(a & b) >> c", {"a": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": 30}},
                                               "b": {"callable": "rt_cancel:busy", "inputs": {"seconds": 30}},
                                               "c": "rt_tasks:pick_a"})
        started = set()
        self.runner.wait_for(lambda m: m["type"] == "task_started" and started.add(m["task"]) is None
                             and started == {"a", "b"})
        time.sleep(0.05)
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id})
        events = self.runner.wait_for(lambda m: m["type"] == "run_finished" and m["run_id"] == run_id)
        self.assertLess(time.time() - t0, 2.0)
        fin = events[-1]
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertEqual(fin["tasks"]["c"], "CANCELLED")
        self.assertEqual({fin["tasks"]["a"], fin["tasks"]["b"]}, {"CANCELLED"})
        self._assert_next_run_completes()

    def test_sleep_keeps_its_semantics(self):
        namespace = {}
        exec(textwrap.dedent(CANCEL_TASKS), namespace)  # the same function with the real time.sleep
        expected = namespace["sleep_semantics"]()
        expected.pop("thread")
        for graph, thread in (("s", "ThreadPoolExecutor"), ("flow >> s[1]", "MainThread")):
            with self.subTest(graph=graph):
                _, fin = self.run_flow(rid(), yaml_doc(graph, tasks={"s": "rt_cancel:sleep_semantics"}))
                self.assertEqual(fin["status"], "COMPLETED", fin["error"])
                out = fin["task_records"]["s"]["output"]
                self.assertTrue(out.pop("thread").startswith(thread))
                slept = out.pop("slept")
                self.assertGreaterEqual(slept, 0.05)
                self.assertLess(slept, 1.0)
                expected.pop("slept", None)
                self.assertEqual(out, expected)
                self.assertEqual(out["name"], "sleep")

    def test_task_subprocess_status_is_intact(self):
        y = yaml_doc("a >> b", tasks={"a": "rt_cancel:exit_status", "b": "rt_cancel:exit_status"})
        for _ in range(2):
            _, fin = self.run_flow(rid(), y)
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
            self.assertEqual((fin["task_records"]["a"]["output"], fin["task_records"]["b"]["output"]), (7, 7))

    def test_no_stale_interrupts(self):
        # Cancels racing with the end of tasks and runs must never leave a
        # TaskCancelled (or SIGUSR1) behind for the engine or the next run.
        for i in range(24):
            run_id = rid()
            seconds = 0.002 * (i % 6)
            graph = "flow >> a[1] >> b" if i % 2 else "(a & b) >> c"
            tasks = {"a": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": seconds}},
                     "b": {"callable": "rt_cancel:busy", "inputs": {"seconds": seconds}},
                     "c": "rt_tasks:pick_a"}
            self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                              "workflow_yaml": yaml_doc(graph, tasks=tasks)})
            self.runner.wait_for(lambda m: m["type"] == "task_started")
            time.sleep(0.001 * (i % 4))
            self.runner.send({"type": "cancel", "run_id": run_id})
            events = self.runner.wait_for(lambda m: m["type"] == "run_finished" and m["run_id"] == run_id)
            fin = events[-1]
            acks = [e for e in events if e["type"] == "cancel_ack"]
            if not acks:
                acks = self.runner.wait_for(lambda m: m["type"] == "cancel_ack")[-1:]
            self.assertIsNone(fin["error"], fin)
            if acks[0]["accepted"]:
                self.assertEqual(fin["status"], "CANCELLED")
            else:
                self.assertEqual(fin["status"], "COMPLETED")
            self._assert_next_run_completes(0.02)
        self.assertNotIn("Traceback", self.runner.stderr_text())


@unittest.skipUnless(LINUX, "the process guard exists on Linux only")
class StrayProcesses(RunnerTestCase):
    """No process a task starts outlives its run (issue "Hardening", item 6)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        (cls.mods / "rt_cancel.py").write_text(textwrap.dedent(CANCEL_TASKS), encoding="utf-8")

    def setUp(self):
        self.pidfile = str(self.tmp / ("pids-%s.json" % uuid.uuid4().hex))
        self.leftovers = []

    def tearDown(self):
        kill_quietly(self.leftovers)
        super().tearDown()

    def _strays(self, hold):
        return yaml_doc("s", tasks={"s": {"callable": "rt_cancel:spawn_strays",
                                          "inputs": {"pidfile": self.pidfile, "hold": hold}}})

    def _pids(self, running=True):
        pids = read_pids(self.pidfile)
        self.leftovers = [pids["session"], pids["orphan"]]
        if running:
            for pid in self.leftovers:
                self.assertIsNotNone(proc_stat(pid), "stray %d not running" % pid)
        return self.leftovers

    def test_cancel_kills_setsid_and_double_forked_processes(self):
        run_id = rid()
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                          "workflow_yaml": self._strays(30)})
        pids = self._pids()
        ready = self.runner.ready
        # the double-forked grandchild was adopted by the guard (subreaper)
        self.assertEqual(proc_stat(pids[1])[1], ready["guard_pid"])
        self.assertEqual(proc_stat(pids[0])[1], ready["pid"])
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertLess(time.time() - t0, 2.0)
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertTrue(wait_gone(pids, 2.0), [proc_stat(p) for p in pids])
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1})
        self.assertEqual(fin["status"], "COMPLETED")

    def test_end_of_run_kills_leftover_processes(self):
        _, fin = self.run_flow(rid(), self._strays(0))
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        pids = self._pids(running=False)  # may be gone already: the cleanup ran right after run_finished
        self.assertEqual(fin["task_records"]["s"]["output"], pids)
        self.assertTrue(wait_gone(pids, 2.0), [proc_stat(p) for p in pids])
        self.assertIn("end of run: terminating 2 leftover process(es)", self.runner.stderr_text())
        # the runner and its guard are still there and serve the next run
        self.assertIsNotNone(proc_stat(self.runner.ready["pid"]))
        _, fin = self.run_flow(rid(), README_YAML, params={"x": 1})
        self.assertEqual(fin["status"], "COMPLETED")

    def _separate_runner_with_strays(self, env=None):
        runner = self.start_runner(env=env)
        run_id = rid()
        runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                     "workflow_yaml": self._strays(30)})
        runner.wait_for(lambda m: m["type"] == "task_started")
        return runner, self._pids()

    def test_sigterm_to_guard_kills_runner_and_setsid_processes(self):
        runner, pids = self._separate_runner_with_strays()
        try:
            runner_pid = runner.ready["pid"]
            os.kill(runner.proc.pid, signal.SIGTERM)
            self.assertEqual(runner.proc.wait(timeout=3), -signal.SIGTERM)
            self.assertTrue(wait_gone(pids + [runner_pid], 2.0), [proc_stat(p) for p in pids + [runner_pid]])
        finally:
            runner.close()

    def test_runner_crash_makes_guard_kill_its_processes_and_exit_like_it(self):
        runner, pids = self._separate_runner_with_strays()
        try:
            os.kill(runner.ready["pid"], signal.SIGKILL)
            self.assertEqual(runner.proc.wait(timeout=3), -signal.SIGKILL)  # the worker sees "signal 9"
            self.assertTrue(wait_gone(pids, 2.0), [proc_stat(p) for p in pids])
            self.assertIn("was killed by signal 9", runner.stderr_text())
        finally:
            runner.close()

    def test_exit_code_is_mirrored(self):
        runner = self.start_runner()
        runner.send({"type": "shutdown"})
        self.assertEqual(runner.wait_for(lambda m: m["type"] == "bye")[-1]["type"], "bye")
        self.assertEqual(runner.proc.wait(timeout=5), 0)
        runner.close()

    def test_worker_killed_with_sigkill(self):
        # A stand-in for the Rust worker starts the runner, starts a run that
        # leaves strays, then dies by SIGKILL: the guard (PDEATHSIG=SIGTERM)
        # must take the runner and every stray with it.
        script = textwrap.dedent('''
            import json, subprocess, sys, time
            runner, pidfile, yaml_text = sys.argv[1:4]
            proc = subprocess.Popen([sys.executable, "-u", runner], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            ready = json.loads(proc.stdout.readline())
            proc.stdin.write((json.dumps({"type": "run", "run_id": "r1", "flow_name": "main", "params": {},
                                          "workflow_yaml": yaml_text}) + "\\n").encode())
            proc.stdin.flush()
            print(json.dumps({"pid": ready["pid"], "guard_pid": ready["guard_pid"]}), flush=True)
            time.sleep(60)
        ''')
        from harness import RUNNER  # noqa: E402
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYOCO_")}
        env["PYTHONPATH"] = str(self.mods)
        fake_worker = subprocess.Popen([sys.executable, "-c", script, str(RUNNER), self.pidfile, self._strays(30)],
                                       stdout=subprocess.PIPE, cwd=str(self.cwd), env=env)
        try:
            info = json.loads(fake_worker.stdout.readline())
            pids = self._pids()
            everything = pids + [info["pid"], info["guard_pid"]]
            fake_worker.kill()
            fake_worker.wait()
            # The guard itself is re-parented to init (which may reap it late).
            self.assertTrue(wait_gone(everything, 3.0, zombie_ok=(info["guard_pid"],)),
                            [proc_stat(p) for p in everything])
        finally:
            if fake_worker.poll() is None:
                fake_worker.kill()
                fake_worker.wait()
            fake_worker.stdout.close()


class GuardDisabled(RunnerTestCase):
    runner_env = {"PYOCO_RUNNER_GUARD": "off"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        (cls.mods / "rt_cancel.py").write_text(textwrap.dedent(CANCEL_TASKS), encoding="utf-8")

    def test_no_guard_and_no_end_of_run_kill(self):
        ready = self.runner.ready
        self.assertIsNone(ready["guard_pid"])
        self.assertEqual(ready["pid"], self.runner.proc.pid)
        pidfile = str(self.tmp / "pids-noguard.json")
        y = yaml_doc("s", tasks={"s": {"callable": "rt_cancel:spawn_strays", "inputs": {"pidfile": pidfile, "hold": 0}}})
        _, fin = self.run_flow(rid(), y)
        pids = read_pids(pidfile)
        strays = [pids["session"], pids["orphan"]]
        try:
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
            time.sleep(0.3)
            for pid in strays:  # today's behaviour: they outlive the run
                self.assertNotIn(proc_stat(pid), (None,))
                self.assertNotEqual(proc_stat(pid)[0], "Z")
        finally:
            kill_quietly(strays)

    def test_cancel_still_interrupts(self):
        run_id = rid()
        y = yaml_doc("s", tasks={"s": {"callable": "rt_cancel:sleeper", "inputs": {"seconds": 30}}})
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {}, "workflow_yaml": y})
        self.runner.wait_for(lambda m: m["type"] == "task_started")
        t0 = time.time()
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertLess(time.time() - t0, 2.0)
        self.assertEqual((fin["status"], fin["tasks"]), ("CANCELLED", {"s": "CANCELLED"}))


class Discovery(RunnerTestCase):
    @classmethod
    def setUpClass(cls):
        cls.trap = Path(os.environ.get("TMPDIR", "/tmp")) / ("trap-%s" % uuid.uuid4().hex)
        cls.runner_env = {"PYOCO_DISCOVERY_MODULES": "rt_disc, rt_tasks", "RT_TRAP_FILE": str(cls.trap)}
        super().setUpClass()

    def tearDown(self):
        super().tearDown()
        self.assertFalse(self.trap.exists(), "an unreferenced discovery task ran")

    def test_discovered_tasks_by_name_only_referenced_run(self):
        y = yaml_doc("disc_a >> disc_double", tasks={"disc_double": {"inputs": {"x": 21}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        self.assertEqual(fin["tasks"], {"disc_a": "SUCCEEDED", "disc_double": "SUCCEEDED"})
        self.assertEqual(fin["task_records"]["disc_double"]["output"], 42)

    def test_overlay_does_not_leak_between_runs(self):
        y1 = yaml_doc("disc_a >> disc_c")
        y2 = yaml_doc("disc_c >> disc_a")  # would be a cycle if Task objects were shared
        for y in (y1, y2, y1):
            _, fin = self.run_flow(rid(), y)
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        y = yaml_doc("disc_double", tasks={"disc_double": {"inputs": {"x": 1}}})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["task_records"]["disc_double"]["output"], 2)
        _, fin = self.run_flow(rid(), yaml_doc("disc_double"), params={"x": 5})
        self.assertEqual(fin["task_records"]["disc_double"]["inputs"], {"x": 5})

    def test_explicit_callable_wins(self):
        y = yaml_doc("disc_a", tasks={"disc_a": "rt_tasks:pick_b"})
        _, fin = self.run_flow(rid(), y)
        self.assertEqual(fin["task_records"]["disc_a"]["output"], "B")


class Resolver(RunnerTestCase):
    def test_flow_not_found_without_resolver(self):
        events, fin = self.runner.run(rid(), None, flow_name="nope")
        self.assertEqual(types_of(events), ["run_finished"])
        self.assertEqual((fin["status"], fin["error_kind"]), ("FAILED", "flow_not_found"))
        self.assertEqual(fin["error"], "flow_not_found: 'nope'")
        self.assertEqual(fin["flow_name"], "nope")

    def test_module_resolver(self):
        runner = self.start_runner(env={"PYOCO_FLOW_RESOLVER": "rt_resolver_mod:resolve"})
        try:
            self.assertEqual(runner.ready["flow_resolver"], "rt_resolver_mod:resolve")
            events, fin = runner.run(rid(), None, flow_name="known")
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
            self.assertEqual(fin["flow_name"], "known_flow")
            self.assertEqual(events[0]["graph_mode"], "resolver")
            self.assertEqual(fin["task_records"]["r2"]["output"], 2)
            self.assertEqual(fin["task_records"]["r1"]["stdout"], "r1 says hi\n")
            _, fin = runner.run(rid(), None, flow_name="known")
            self.assertEqual(fin["status"], "COMPLETED")
            _, fin = runner.run(rid(), None, flow_name="unknown-flow")
            self.assertEqual(fin["error"], "flow_not_found: 'unknown-flow'")
            _, fin = runner.run(rid(), None, flow_name="broken")
            self.assertEqual(fin["error_kind"], "resolver_error")
            self.assertIn("resolver broke", fin["error"])
            _, fin = runner.run(rid(), None, flow_name="notaflow")
            self.assertEqual(fin["error_kind"], "resolver_error")
            # YAML runs still work with a resolver configured
            _, fin = runner.run(rid(), README_YAML, params={"x": 1})
            self.assertEqual(fin["status"], "COMPLETED")
            self.assertEqual(runner.bad_lines, [])
        finally:
            runner.close()

    def test_file_path_resolver(self):
        resolver_dir = self.tmp / "resolver dir"
        resolver_dir.mkdir(exist_ok=True)
        path = resolver_dir / "my_resolver.py"
        path.write_text(RESOLVER_FILE, encoding="utf-8")
        runner = self.start_runner(env={"PYOCO_FLOW_RESOLVER": "%s:resolve" % path})
        try:
            _, fin = runner.run(rid(), None, flow_name="filed")
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
            self.assertEqual(fin["task_records"]["f1"]["output"], "from-file")
            _, fin = runner.run(rid(), None, flow_name="other")
            self.assertEqual(fin["error"], "flow_not_found: 'other'")
        finally:
            runner.close()
        # relative path form, resolved against the runner's CWD
        rel = os.path.relpath(path, self.cwd)
        runner = self.start_runner(env={"PYOCO_FLOW_RESOLVER": rel + ":resolve"})
        try:
            _, fin = runner.run(rid(), None, flow_name="filed")
            self.assertEqual(fin["status"], "COMPLETED", fin["error"])
        finally:
            runner.close()

    def test_broken_resolver_spec(self):
        runner = self.start_runner(env={"PYOCO_FLOW_RESOLVER": "no_such_resolver_mod:fn"})
        try:
            _, fin = runner.run(rid(), None, flow_name="x")
            self.assertEqual(fin["error_kind"], "resolver_error")
            self.assertIn("no_such_resolver_mod", fin["error"])
        finally:
            runner.close()


class Lifecycle(unittest.TestCase):
    def test_shutdown_and_eof(self):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            runner = RunnerProcess(tmp)
            runner.send({"type": "shutdown"})
            self.assertEqual(runner.next()["type"], "bye")
            self.assertEqual(runner.proc.wait(timeout=10), 0)
            runner.close()
            # EOF finishes queued work first, then exits 0
            runner = RunnerProcess(tmp)
            runner.send({"type": "run", "run_id": "eof-run", "flow_name": "x", "params": {}, "workflow_yaml": None})
            runner.proc.stdin.close()
            fin = runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
            self.assertEqual(fin["error_kind"], "flow_not_found")
            self.assertEqual(runner.proc.wait(timeout=10), 0)
            runner.close()


if __name__ == "__main__":
    unittest.main()
