"""End-to-end tests of pyoco_runner.py through its stdin/stdout protocol."""

from __future__ import annotations

import os
import sys
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


def types_of(events):
    return [e["type"] for e in events]


class ProtocolBasics(RunnerTestCase):
    def test_ready(self):
        ready = self.runner.ready
        self.assertEqual(ready["type"], "ready")
        self.assertEqual(ready["protocol"], 1)
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
        self.assertEqual(
            types_of(events),
            ["run_started", "task_started", "task_finished", "snapshot",
             "task_started", "task_finished", "snapshot", "run_finished"],
        )
        started = events[0]
        self.assertEqual(started["run_id"], run_id)
        self.assertEqual(started["flow_name"], "main")
        self.assertEqual(started["status"], "RUNNING")
        self.assertEqual(started["graph_mode"], "expression")
        self.assertEqual(started["tasks"], {"t1": "PENDING", "t2": "PENDING"})
        self.assertEqual(list(started["tasks"]), ["t1", "t2"])  # graph order
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
        self.assertEqual(events[3]["tasks"], {"t1": "SUCCEEDED", "t2": "PENDING"})
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
        snaps = [e for e in events if e["type"] == "snapshot"]
        self.assertEqual(snaps[-1]["error"], "kaboom")

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
        # fd-level writes (child processes, os.write(1)) go to the runner's stderr
        deadline = time.time() + 5
        while time.time() < deadline and "raw fd1 write" not in self.runner.stderr_text():
            time.sleep(0.05)
        self.assertIn("from subprocess", self.runner.stderr_text())
        self.assertIn("raw fd1 write", self.runner.stderr_text())
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


class Cancel(RunnerTestCase):
    def _flow(self, seconds):
        return yaml_doc(
            "s1 >> t2 >> t3",
            tasks={"s1": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": seconds}},
                   "t2": "rt_tasks:pick_a", "t3": "rt_tasks:pick_b"},
        )

    def test_cancel_during_first_task(self):
        run_id = rid()
        t0 = time.time()
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                          "workflow_yaml": self._flow(1.0)})
        before = self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s1")
        self.runner.send({"type": "ping"})
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
        self.assertEqual(fin["tasks"], {"s1": "SUCCEEDED", "t2": "CANCELLED", "t3": "CANCELLED"})
        self.assertEqual(fin["task_records"]["t2"]["state"], "CANCELLED")
        cancelled = [e for e in events if e["type"] == "task_finished" and e["state"] == "CANCELLED"]
        self.assertEqual(sorted(e["task"] for e in cancelled), ["t2", "t3"])
        self.assertNotIn("t2", [e.get("task") for e in before + events if e["type"] == "task_started"])
        self.assertLess(time.time() - t0, 10)

    def test_cancel_in_control_flow_mode(self):
        run_id = rid()
        y = yaml_doc(
            "flow >> s1 >> t2[2] >> t3",
            tasks={"s1": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": 0.5}},
                   "t2": "rt_tasks:pick_a", "t3": "rt_tasks:pick_b"},
        )
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {}, "workflow_yaml": y})
        self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s1")
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertEqual(fin["status"], "CANCELLED")
        self.assertEqual(fin["tasks"], {"s1": "SUCCEEDED", "t2": "CANCELLED", "t3": "CANCELLED"})

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

    def test_cancel_during_last_task_completes(self):
        run_id = rid()
        y = yaml_doc("t1 >> s", tasks={"t1": "rt_tasks:pick_a",
                                       "s": {"callable": "rt_tasks:sleepy", "inputs": {"seconds": 0.5}}})
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {}, "workflow_yaml": y})
        self.runner.wait_for(lambda m: m["type"] == "task_started" and m["task"] == "s")
        self.runner.send({"type": "cancel", "run_id": run_id})
        fin = self.runner.wait_for(lambda m: m["type"] == "run_finished")[-1]
        self.assertEqual(fin["status"], "COMPLETED")
        self.assertTrue(fin["cancel_requested"])

    def test_cancel_other_run_id_does_not_affect_current(self):
        run_id = rid()
        self.runner.send({"type": "run", "run_id": run_id, "flow_name": "main", "params": {},
                          "workflow_yaml": self._flow(0.3)})
        self.runner.wait_for(lambda m: m["type"] == "task_started")
        self.runner.send({"type": "cancel", "run_id": "someone-else"})
        events = self.runner.wait_for(lambda m: m["type"] == "run_finished")
        self.assertEqual(events[-1]["status"], "COMPLETED")


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
