"""Scoring script for the Azure ML inference server (azmlinfsrv), the reference the agent's
/score is measured against: the same model through onnxruntime, one intra-op thread."""
import json
import os

import numpy as np
import onnxruntime as ort

session = None
input_name = None


def init():
    global session, input_name
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(os.environ["EDGEFLEET_BENCH_MODEL"], options,
                                   providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


def run(raw_data):
    data = json.loads(raw_data)["data"]
    outputs = session.run(None, {input_name: np.asarray(data, dtype=np.float32)})
    return {o.name: r.tolist() for o, r in zip(session.get_outputs(), outputs)}
