"""FPGA engine benchmark: accuracy per number format, emulated latency, and the emulator's own speed.

    python benchmarks/fpga.py            # results in benchmarks/results/fpga.md and .json
    python benchmarks/fpga.py --quick    # shorter, nothing recorded

Two networks on scikit-learn's digits (70/30 split, random_state 0): scikit-learn's MLPClassifier (one hidden
layer of 100, ReLU) through skl2onnx, and a small CNN (Conv 3x3 x8 + ReLU, MaxPool 2, Conv 3x3 x16 + ReLU,
Flatten, Gemm) trained with PyTorch when it is installed and written as ONNX with onnx.helper (skipped, saying
so, without PyTorch). Each is compiled for every format, with no fine-tuning, and run by the emulator on the
test split. With PyTorch, each network is then fine-tuned for every narrow format (quantization-aware,
mlops_magics.fpga.finetune: 5 epochs on the training split, seeds 0-2) and measured again on the same test split,
in the format and in fp32. Goals (issue 21): MXFP8 and msfp9 within 1 point of fp32 on the MLP; >= 500
requests/s at batch 1 on one core for the MLP. Latency and engine figures are EMULATED (the latency model,
Brainwave's Stratix 10 engine); requests/s are the emulator's real speed on this machine.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, before numpy loads

import statistics  # noqa: E402 (after the thread settings)
import sys  # noqa: E402 (after the thread settings)
import time  # noqa: E402 (after the thread settings)
import warnings  # noqa: E402 (after the thread settings)
from pathlib import Path  # noqa: E402 (after the thread settings)
from typing import Any  # noqa: E402 (after the thread settings)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, describe, finish, unshadow  # noqa: E402 (after the thread settings)

unshadow()  # docker.py and onnx.py in this folder would hide the libraries of those names

import numpy as np  # noqa: E402

FORMATS = ("fp32", "bf16", "mxint8", "mxfp8", "mxfp8_e5m2", "msfp9", "mxfp6", "mxfp6_e3m2", "msfp8", "mxfp4")
GOALS = {"drop_points": 1.0, "rps": 500.0}
FINETUNE = {"epochs": 5, "learning_rate": 1e-3, "batch_size": 32, "seeds": (0, 1, 2)}


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X.astype(np.float32), y, test_size=0.3, random_state=0)
    return X_train, X_test, y_train, y_test


def mlp_onnx(X_train: np.ndarray, y_train: np.ndarray) -> Any:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=0).fit(X_train, y_train)
    return to_onnx(clf, X_train[:1], options={id(clf): {"zipmap": False}})


def cnn_onnx(X_train: np.ndarray, y_train: np.ndarray, epochs: int) -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    from onnx import TensorProto, helper, numpy_helper

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x = torch.tensor(X_train / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y_train)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            opt.step()
    p = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    # trained on pixels / 16: the 1/16 folded into the first convolution's kernel (a convolution is linear)
    weights = {"k1": p["0.weight"] / np.float32(16), "b1": p["0.bias"], "k2": p["3.weight"], "b2": p["3.bias"],
               "fc": p["6.weight"], "fb": p["6.bias"]}
    nodes = [helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "k2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])]
    graph = helper.make_graph(nodes, "digits-cnn", inputs,
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def requests_per_second(emulator: Any, rows: np.ndarray, seconds: float) -> float:
    """Batch-1 requests/s, median of 3 timed runs of ``seconds``/3."""
    rates = []
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for row in rows[:50]:
                emulator.run(row[None])
            n += 50
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def sweep(model: Any, X_test: np.ndarray, y_test: np.ndarray, shape: tuple[int, ...], seconds: float) -> dict[str, Any]:
    import onnxruntime as ort

    from mlops_magics.fpga.compiler import compile_model
    from mlops_magics.fpga.emulator import Emulator
    from mlops_magics.fpga.formats import get_format
    from mlops_magics.fpga.latency import estimate_latency

    x = X_test.reshape(-1, *shape)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x})
    probabilities = next(r for r in reference if r.dtype == np.float32)
    rows: dict[str, Any] = {}
    for name in FORMATS:
        started = time.perf_counter()
        program = compile_model(model, name)
        compile_ms = (time.perf_counter() - started) * 1e3
        emulator = Emulator(program)
        scores = emulator.scores(x)
        latency = estimate_latency(program)
        rows[name] = {"accuracy": float((emulator.predict(x) == y_test).mean()),
                      "max_abs_vs_onnxruntime": float(np.abs(scores - probabilities).max()),
                      "bits_per_element": get_format(name).bits_per_element,
                      "weight_bytes": program.weight_bits / 8, "macs": program.macs, "tiles": program.tiles,
                      "instructions": program.instruction_count, "emulated_cycles": latency.cycles,
                      "emulated_us": latency.microseconds, "emulated_utilization": latency.utilization,
                      "emulated_layers_us": {layer.layer: layer.microseconds for layer in latency.layers},
                      "compile_ms": compile_ms, "emulator_rps_batch1": requests_per_second(emulator, x, seconds)}
        started = time.perf_counter()
        emulator.scores(x)
        rows[name]["emulator_rows_per_s_batch"] = len(x) / (time.perf_counter() - started)
    base = rows["fp32"]["accuracy"]
    for r in rows.values():
        r["drop_points"] = (base - r["accuracy"]) * 100
    return rows


def finetuned(model: Any, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
              shape: tuple[int, ...], epochs: int, seeds: tuple[int, ...]) -> dict[str, Any] | None:
    """Per narrow format: emulated accuracy after quantization-aware fine-tuning, per seed (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    from mlops_magics.fpga.finetune import finetune

    torch.set_num_threads(1)
    rows: dict[str, Any] = {}
    for name in FORMATS[1:]:
        runs = []
        for seed in seeds:
            tuned = finetune(model, name, X_train.reshape(-1, *shape), y_train, epochs=epochs, seed=seed,
                             learning_rate=FINETUNE["learning_rate"], batch_size=FINETUNE["batch_size"],
                             validation=(X_test.reshape(-1, *shape), y_test))
            runs.append({"seed": seed, "accuracy_before": tuned.accuracy_before, "accuracy_after": tuned.accuracy_after,
                         "drop_before": tuned.drop_before, "drop_after": tuned.drop_after,
                         "fp32_accuracy_before": tuned.fp32_accuracy_before,
                         "fp32_accuracy_after": tuned.fp32_accuracy_after, "fp32_change": tuned.fp32_change,
                         "seconds": tuned.seconds, "history": [vars(e) for e in tuned.history]})
        rows[name] = {"epochs": epochs, "runs": runs,
                      "drop_after_mean": statistics.mean(r["drop_after"] for r in runs),
                      "fp32_change_mean": statistics.mean(r["fp32_change"] for r in runs),
                      "seconds_mean": statistics.mean(r["seconds"] for r in runs)}
    return rows


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):+.2f} ({min(values):+.2f} to {max(values):+.2f})"


def finetune_table(tuned: dict[str, Any]) -> list[str]:
    first = next(iter(tuned.values()))
    seeds = ", ".join(str(r["seed"]) for r in first["runs"])
    lines = ["Fine-tuned (quantization-aware, `mlops_magics.fpga.finetune`): "
             f"{first['epochs']} epochs of Adam (learning rate {FINETUNE['learning_rate']:g}, cosine decay, batch "
             f"{FINETUNE['batch_size']}) on the 1,257 training rows, through the emulator's own rounding; measured "
             f"by the emulator on the same 540 test rows; seeds {seeds}: mean (min to max). The drop is against the "
             "original model in fp32; the fp32 change is what tuning did to the tuned weights' own fp32 accuracy.",
             "", "| format | drop before (points) | drop after fine-tuning (points) | fp32 change of the tuned "
             "weights (points) | epochs | training s (one core) |", "|---|---|---|---|---|---|"]
    for name, r in tuned.items():
        lines.append(f"| {name} | {r['runs'][0]['drop_before']:+.2f} | "
                     f"{_spread([x['drop_after'] for x in r['runs']])} | "
                     f"{_spread([x['fp32_change'] for x in r['runs']])} | {r['epochs']} | {r['seconds_mean']:.1f} |")
    return [*lines, ""]


def report(result: dict[str, Any]) -> str:
    engine = result["engine"]
    lines = ["# FPGA engine benchmark (emulated engine)", "", f"Machine: {describe(result['machine'])}",
             f"Command: `python benchmarks/fpga.py` (one core: BLAS threads 1; batch-1 timing {result['seconds']} s "
             f"per format). Engine of the latency model (EMULATED): {engine}.", "",
             "Accuracy is on the digits test split (540 rows; one row is 0.19 points), without fine-tuning in the "
             "first table of each network, after quantization-aware fine-tuning in the second. Latency, cycles and "
             "utilization are EMULATED by the latency model, not measured on an FPGA; requests/s are the emulator's "
             "real speed here.",
             ""]
    if result.get("load"):
        lines += [f"Machine load: {result['load']} (other sessions' work shares the machine; accuracies do not "
                  "depend on it, timings do).", ""]
    for net, rows in result["networks"].items():
        if rows is None:
            lines += [f"## {net}", "", "Skipped: PyTorch is not installed (it trains the CNN).", ""]
            continue
        lines += [f"## {net}", "", "| format | bits/value | accuracy | drop (points) | max abs vs onnxruntime fp32 | "
                  "weights bytes | emulated latency us | emulated cycles | emulator req/s, batch 1 | "
                  "emulator rows/s, one batch |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['bits_per_element']:.4g} | {r['accuracy']:.2%} | {r['drop_points']:+.2f} | "
                         f"{r['max_abs_vs_onnxruntime']:.2e} | {r['weight_bytes']:,.0f} | {r['emulated_us']:.3f} | "
                         f"{r['emulated_cycles']:,} | {r['emulator_rps_batch1']:,.0f} | "
                         f"{r['emulator_rows_per_s_batch']:,.0f} |")
        first = next(iter(rows.values()))
        lines += ["", f"{first['macs']:,} MACs, {first['tiles']} tiles, {first['instructions']:,} instructions per "
                  f"request; emulated per layer (us): " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                                   first["emulated_layers_us"].items()), ""]
        tuned = result.get("finetuned", {}).get(net)
        lines += finetune_table(tuned) if tuned else ["Fine-tuning skipped: PyTorch is not installed.", ""]
    mlp = result["networks"]["digits MLP (MLPClassifier 64-100-10)"]
    goals = [f"MXFP8 drop {mlp['mxfp8']['drop_points']:+.2f} points (goal within {GOALS['drop_points']:g}): "
             f"{'met' if abs(mlp['mxfp8']['drop_points']) <= GOALS['drop_points'] else 'NOT met'}",
             f"msfp9 drop {mlp['msfp9']['drop_points']:+.2f} points: "
             f"{'met' if abs(mlp['msfp9']['drop_points']) <= GOALS['drop_points'] else 'NOT met'}",
             *_tuned_goals(result.get("finetuned", {}).get("digits MLP (MLPClassifier 64-100-10)")),
             f"emulator batch 1, MXFP8: {mlp['mxfp8']['emulator_rps_batch1']:,.0f} req/s on one core (goal >= "
             f"{GOALS['rps']:g}): {'met' if mlp['mxfp8']['emulator_rps_batch1'] >= GOALS['rps'] else 'NOT met'}"]
    lines += ["## Goals", ""] + [f"- {g}" for g in goals]
    return "\n".join(lines) + "\n"


def _tuned_goals(tuned: dict[str, Any] | None) -> list[str]:
    if not tuned:
        return ["after fine-tuning: not measured (PyTorch is not installed)"]
    out = []
    for name in ("mxfp8", "msfp9"):
        drops = [r["drop_after"] for r in tuned[name]["runs"]]
        met = sum(abs(d) <= GOALS["drop_points"] for d in drops)
        out.append(f"{name} after fine-tuning: drop {_spread(drops)} points over {len(drops)} seeds: goal met by "
                   f"{met} of {len(drops)}")
    return out


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores at the start"


def main() -> int:
    parser = command_line(__doc__, "Short timings and training; print only, write nothing.")
    args = parser.parse_args()
    seconds = 0.6 if args.quick else 3.0
    from mlops_magics.fpga.latency import BRAINWAVE_S10

    load = _load()
    X_train, X_test, y_train, y_test = digits()
    mlp = mlp_onnx(X_train, y_train)
    cnn = cnn_onnx(X_train, y_train, epochs=5 if args.quick else 30)
    e = BRAINWAVE_S10
    epochs, seeds = (2, (0,)) if args.quick else (FINETUNE["epochs"], FINETUNE["seeds"])
    mlp_name, cnn_name = "digits MLP (MLPClassifier 64-100-10)", "digits CNN (PyTorch-trained, ONNX by onnx.helper)"
    tuned: dict[str, Any] = {}
    for net, model, shape in ((mlp_name, mlp, (64,)), (cnn_name, cnn, (1, 8, 8))):
        if model is not None:
            rows = finetuned(model, X_train, y_train, X_test, y_test, shape, epochs, seeds)
            if rows is not None:
                tuned[net] = rows
    result: dict[str, Any] = {
        "seconds": seconds,
        "load": load,
        "engine": f"{e.macs_per_cycle:,} MACs at {e.clock_mhz:g} MHz, native dimension {e.native_dim}, {e.lanes} "
                  f"lanes, {e.tile_engines} tile engines, {e.peak_tflops:g} TFLOPS peak ({e.source})",
        "networks": {mlp_name: sweep(mlp, X_test, y_test, (64,), seconds),
                     cnn_name: sweep(cnn, X_test, y_test, (1, 8, 8), seconds) if cnn is not None else None},
        "finetuned": tuned}
    return finish("fpga", result, report, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
