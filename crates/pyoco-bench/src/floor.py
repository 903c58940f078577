"""pyoco-bench floor row: pyoco's own Engine running the bench flow in a loop, in one process.

Usage: python floor.py FLOW_YAML SECONDS   (the tasks' module must be importable: PYTHONPATH)
Prints one JSON line: {"runs": N, "seconds": S, "runs_per_s": R, "pyoco": VERSION}.

The flow.yaml is read and its tasks imported once (as a warm runner does); the graph is built
and the Engine created for every run, with a trace backend that records nothing and the run's
output checked, so the loop measures what one run of the flow costs inside pyoco itself: the
physical floor of one runner process.
"""

import sys
import time

from pyoco.core.engine import Engine
from pyoco.discovery.loader import TaskLoader
from pyoco.dsl.graph import build_flow_from_graph
from pyoco.schemas.config import PyocoConfig
from pyoco.trace.backend import TraceBackend


class Silent(TraceBackend):
    def on_flow_start(self, flow_name, run_id=None):
        pass

    def on_flow_end(self, flow_name):
        pass

    def on_node_start(self, node_name):
        pass

    def on_node_end(self, node_name, duration_ms):
        pass

    def on_node_error(self, node_name, error):
        pass


def main():
    path, seconds = sys.argv[1], float(sys.argv[2])
    config = PyocoConfig.from_yaml(path)
    loader = TaskLoader(config)
    loader.load()
    graph = config.flow.graph
    defaults = dict(config.flow.defaults or {})

    def one():
        flow = build_flow_from_graph(graph=graph, tasks=loader.tasks, pipes=config.pipes, flow_name="main")
        ctx = Engine(trace_backend=Silent()).run(flow, dict(defaults))
        return ctx

    # Warm-up, and a check that the flow really ran.
    ctx = one()
    results = getattr(ctx, "results", None)
    if isinstance(results, dict) and results.get("b") not in (None, 4):
        raise SystemExit("floor: unexpected result of task b: %r" % (results.get("b"),))
    for _ in range(200):
        one()
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(50):
            one()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - t0
    cpu = time.process_time()
    try:
        from importlib.metadata import version
        pyoco_version = version("pyoco")
    except Exception:
        pyoco_version = None
    print('{"runs": %d, "seconds": %.6f, "runs_per_s": %.3f, "pyoco": %s}' % (
        n, elapsed, n / elapsed, '"%s"' % pyoco_version if pyoco_version else "null"))


if __name__ == "__main__":
    main()
