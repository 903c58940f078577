"""Per-run overhead of a warm runner (not a unit test; run it directly).

    python crates/pyoco-worker/python/tests/bench_overhead.py [runs]

Measures wall time from writing a `run` request (trivial 2-task flow.yaml)
to reading its `run_finished` line, over N runs in one runner process, plus
the same for a resolver-less flow_not_found run (pure protocol round trip).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import RunnerProcess, write_task_modules, yaml_doc  # noqa: E402


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def measure(runner, n, yaml_text, flow_name="main"):
    samples = []
    for _ in range(n):
        run_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        _, fin = runner.run(run_id, yaml_text, flow_name=flow_name)
        samples.append((time.perf_counter() - t0) * 1000.0)
        if yaml_text is not None:
            assert fin["status"] == "COMPLETED", fin
    return samples


def report(label, samples):
    print("%-34s n=%d  p50=%.2f ms  p90=%.2f ms  p99=%.2f ms  mean=%.2f ms  max=%.2f ms" % (
        label, len(samples), pct(samples, 50), pct(samples, 90), pct(samples, 99),
        statistics.mean(samples), max(samples)))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as tmp:
        mods = write_task_modules(os.path.join(tmp, "mods"))
        cwd = os.path.join(tmp, "cwd")
        os.mkdir(cwd)
        t0 = time.perf_counter()
        runner = RunnerProcess(cwd, pythonpath=[mods])
        print("start-up to ready: %.1f ms (python %s, pyoco %s)" % (
            (time.perf_counter() - t0) * 1000.0, runner.ready["python"], runner.ready["pyoco"]))
        try:
            y = yaml_doc("t1 >> t2", tasks={"t1": "rt_tasks:pick_a", "t2": "rt_tasks:pick_b"})
            measure(runner, 10, y)  # warm-up (first imports, thread pool code paths)
            report("2-task flow.yaml run", measure(runner, n, y))
            report("flow_not_found round trip", measure(runner, n, None, flow_name="nope"))
            runner.send({"type": "ping"})
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                runner.send({"type": "ping"})
                runner.wait_for(lambda m: m["type"] == "pong")
                samples.append((time.perf_counter() - t) * 1000.0)
            report("ping/pong", samples)
        finally:
            runner.close()


if __name__ == "__main__":
    main()
