"""Python onnxruntime reference for agent/benches/inference.rs: the same models and inputs,
one intra-op thread, a JSON-decoded list to a numpy array and one session.run per request.
Prints one JSON line per model, like the Rust benchmark."""
import json
import pathlib
import statistics
import time

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = [("diabetes", ROOT / "tests/models/diabetes"), ("digits", ROOT / "tests/models/digits"),
          ("digits-zipmap", ROOT / "tests/models/digits-zipmap"), ("mlp-10MB", ROOT / "target/models/mlp")]

for name, d in MODELS:
    if not (d / "model.onnx").exists():
        continue
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(d / "model.onnx"), options, providers=["CPUExecutionProvider"])
    reference = json.loads((d / "reference.json").read_text())
    (input_name, rows), = reference["inputs"].items()
    inputs = reference["inputs"]
    if name == "diabetes":  # the quickstart request, as in the Rust benchmark
        rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]
        inputs = {input_name: rows}
    body = json.dumps(inputs)
    def once():
        request = json.loads(body)
        out = sess.run(None, {input_name: np.asarray(request[input_name], dtype=np.float32)})
        return [o.tolist() if hasattr(o, "tolist") else o for o in out]
    for _ in range(200):
        once()
    samples, start = [], time.perf_counter()
    while time.perf_counter() - start < 3:
        t = time.perf_counter()
        once()
        samples.append((time.perf_counter() - t) * 1e6)
    print(json.dumps({"model": name, "rows": len(rows), "iterations": len(samples),
                      "mean_us": statistics.fmean(samples), "p50_us": statistics.median(samples)}))
