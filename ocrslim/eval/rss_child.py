"""Child process of :func:`ocrslim.eval.bench.peak_rss_mb`: open one model, run it, print its peak RSS as JSON.

    python -m ocrslim.eval.rss_child '["artifacts/mnn/student_det.mnn", "det", null, 2, [1, 3, 736, 736], 3]'

VmHWM (the high-water mark of this process's own memory) rather than ``ru_maxrss``: on Linux
``ru_maxrss`` survives fork+exec, so a child would report its parent's peak.
"""

from __future__ import annotations

import json
import resource
import sys


def hwm_mb() -> float:
    """This process's peak resident memory in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    spec, task, backend, threads, shape, runs = json.loads((argv or sys.argv[1:])[0])
    import numpy as np

    from ocrslim.infer.pipeline import open_model

    base = hwm_mb()
    model = open_model(spec, task, backend=backend, threads=threads)
    x = np.random.default_rng(0).uniform(-1, 1, size=shape).astype(np.float32)
    for _ in range(runs):
        model.runner(x)
    print(json.dumps({"peak_rss_mb": hwm_mb(), "import_rss_mb": base}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
