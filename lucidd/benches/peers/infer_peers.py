"""The peers of lucidd's classifier-engine benchmark: PyTorch (CPU, eager, no_grad) and
ONNX Runtime (CPU, the model exported from the same PyTorch module) on the same
all-MiniLM-L6-v2 weights and the same token ids, in the same run.

PyTorch also runs under bf16 autocast, the peer of lucid's bf16 precision.

Usage: infer_peers.py MODEL_DIR CASES_JSON THREADS. CASES_JSON: [{"batch": B, "len": L,
"ids": [[...], ...]}]. Prints one JSON object: sequences/s per peer per case, and the
batch-1 x 128 p50 latency in ms.
"""
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time


def timed(run, batch, min_seconds=2.0, min_runs=5):
    run()  # warm-up
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(times) < min_runs:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return batch * len(times) / sum(times), statistics.median(times) * 1e3


def main():
    model_dir, cases_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cases = json.load(open(cases_path))
    import numpy as np
    import torch
    import transformers
    torch.set_num_threads(threads)
    model = transformers.BertModel.from_pretrained(model_dir).eval()
    out = {"torch_version": torch.__version__}

    def torch_run(ids, bf16):
        t = torch.tensor(ids)
        mask = torch.ones_like(t)
        # bf16 autocast (oneDNN uses AMX where the CPU has it) is the like-for-like peer
        # of lucid's bf16 precision (what `auto` takes on AMX).
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        def run():
            with torch.inference_mode(), cast:
                model(input_ids=t, attention_mask=mask)
        return run

    for name, bf16 in [("torch", False), ("torchbf16", True)]:
        for c in cases:
            rate, p50 = timed(torch_run(c["ids"], bf16), c["batch"])
            out[f"{name}_b{c['batch']}_l{c['len']}"] = round(rate, 2)
            if c["batch"] == 1:
                out[f"{name}_b1_l{c['len']}_p50_ms"] = round(p50, 3)

    try:
        import onnxruntime as ort
        path = os.path.join(tempfile.mkdtemp(), "minilm.onnx")
        dummy = torch.tensor(cases[0]["ids"])
        class Encoder(torch.nn.Module):
            """The model with a plain (ids, mask) -> hidden signature for the exporter."""
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        torch.onnx.export(Encoder(model), (dummy, torch.ones_like(dummy)), path, input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], dynamic_axes={"input_ids": {0: "b", 1: "t"},
                          "attention_mask": {0: "b", 1: "t"}, "last_hidden_state": {0: "b", 1: "t"}},
                          opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        out["onnxruntime_version"] = ort.__version__
        for c in cases:
            ids = np.array(c["ids"], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            rate, p50 = timed(lambda: sess.run(None, feeds), c["batch"])
            out[f"ort_b{c['batch']}_l{c['len']}"] = round(rate, 2)
            if c["batch"] == 1:
                out[f"ort_b1_l{c['len']}_p50_ms"] = round(p50, 3)
    except Exception as e:  # a missing peer is reported, not hidden
        out["ort_error"] = repr(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
