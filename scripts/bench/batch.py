"""Python onnxruntime reference for `edgefleet-agent model batch` over a CSV file: the same
model, one intra-op thread, rows read with the csv module in chunks of 256, one session.run per
chunk, a CSV of outputs written as the agent writes it (a column per output, then `error`).

Usage: batch.py MODEL.onnx INPUT.csv OUTPUT.csv"""
import csv
import sys

import numpy as np
import onnxruntime as ort

CHUNK = 256

model, source, target = sys.argv[1:4]
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
sess = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
input_name = sess.get_inputs()[0].name
outputs = [o.name for o in sess.get_outputs()]

with open(source, newline="") as f, open(target, "w", newline="") as g:
    reader = csv.reader(f)
    writer = csv.writer(g, lineterminator="\n")
    next(reader)
    writer.writerow(outputs + ["error"])
    def run(rows):
        results = sess.run(outputs, {input_name: np.array(rows, dtype=np.float32)})
        for i in range(len(rows)):
            writer.writerow([r[i][0] if r[i].size == 1 else r[i].tolist() for r in results] + [""])
    rows = []
    for row in reader:
        rows.append([float(v) for v in row])
        if len(rows) == CHUNK:
            run(rows)
            rows = []
    if rows:
        run(rows)
