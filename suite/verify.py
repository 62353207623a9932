"""Check the exported ONNX files against the PyTorch 4-bit model in onnxruntime; write DIR/verify.json.

Per file: size, top-1 agreement and max |logit difference| against PyTorch, test accuracy, latency (batch 1)
and throughput (batch 64) at the given threads, the node types of onnxruntime's optimized graph (the proof
that QLinearConv/QGemm ran), and agreement of graph optimizations off against all on (onnxruntime issue
24711: Conv+Q/DQ rewritten to QLinearConv gave wrong outputs at level >= extended). For int4 also the
codes read back from the file, compared with PyTorch's. Timings are medians of interleaved runs, so
a disturbance on the host hits all files alike; the load average before and after is recorded.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto

from . import data as datamod
from .atomic import write_json_atomic
from .bounds import check_count, check_optional_count
from .errors import UserError
from .locks import hold
from .measure.host import read_cpuinfo
from .provenance import stamp
from .spec import VERIFY_FILE
from .threads import torch_threads
from .export import FILES, INPUT_NAME, METADATA_KEY, OUTPUT_NAME, checkpoint_data, network_stages, unpack_int4
from .train import model_from_checkpoint

EVAL_BATCH = 100
THROUGHPUT_BATCH = 64
WARMUP_RUNS = 2  # per session before any timing: the first runs allocate and pack weights

# The targets; verify.json says for each whether this run met it.
TARGET_INT4_AGREEMENT = 99.9  # percent
TARGET_INT4_MAX_LOGIT_DIFF = 1e-3
TARGET_SIZE_RATIO = 7.8
TARGET_INT8_ACC_DROP = 0.3  # points
TARGET_INT8_SPEEDUP = 2.0  # batch-64 throughput over fp32.onnx


@dataclass(frozen=True)
class VerifyConfig:
    checkpoint: str
    onnx_dir: str
    data_dir: str | None = None
    threads: int = 2
    limit: int | None = None  # evaluate on the first N test images (None: all)
    agreement_images: int = 1000  # images for the optimizations-off vs all-on comparison
    speed_rounds: int = 12  # interleaved timing rounds (per file: throughput_runs batch-64 and latency_runs batch-1 runs)
    throughput_runs: int = 3
    latency_runs: int = 5
    profile_runs: int = 8  # interleaved profiled batch-64 runs per file for the per-layer kernel times

    def __post_init__(self):  # the CLI's ranges (suite.bounds) for library callers too
        for name in ("threads", "agreement_images", "speed_rounds", "throughput_runs", "latency_runs", "profile_runs"):
            check_count(getattr(self, name), name)
        check_optional_count(self.limit, "limit")


# ---------------------------------------------------------------------------------------------
# Reading the files


def load_onnx(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found (run q4bench export first)")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...: all mean a bad file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {reason[:200]})") from None
    return model


def file_metadata(model: onnx.ModelProto, path: Path) -> dict:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError:
                break
    raise UserError(f"{path}: no readable '{METADATA_KEY}' metadata; not a file written by q4bench export")


def initializers(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def int4_codes(model: onnx.ModelProto, layer: str, path: Path) -> tuple[np.ndarray, bool]:
    """(codes, stored packed in raw_data) of a layer's INT4 weight initializer."""
    t = initializers(model).get(f"{layer}.weight_int4")
    if t is None or t.data_type != TensorProto.INT4:
        raise UserError(f"{path}: layer {layer} has no INT4 weight initializer '{layer}.weight_int4'")
    shape = tuple(t.dims)
    if t.raw_data:
        try:
            return unpack_int4(t.raw_data, shape), True
        except ValueError as exc:
            raise UserError(f"{path}: initializer {t.name}: {exc}") from None
    # int32_data: one byte (two codes) per int32, the layout onnx's make_tensor gets wrong for int4; read it anyway
    packed = np.asarray(t.int32_data, dtype=np.int64).astype(np.uint8).tobytes()
    return unpack_int4(packed, shape), False


def int8_codes(model: onnx.ModelProto, layer: str, path: Path) -> np.ndarray:
    t = initializers(model).get(f"{layer}.weight_int8")
    if t is None or t.data_type != TensorProto.INT8:
        raise UserError(f"{path}: layer {layer} has no INT8 weight initializer '{layer}.weight_int8'")
    return onnx.numpy_helper.to_array(t)


def codes_equal_up_to_channel_sign(file_codes: np.ndarray, torch_codes: np.ndarray) -> bool:
    """int8.onnx moves a negative BatchNorm multiplier into the codes' sign, channel by channel."""
    if file_codes.shape != torch_codes.shape:
        return False
    f = file_codes.reshape(file_codes.shape[0], -1).astype(np.int16)
    t = torch_codes.reshape(torch_codes.shape[0], -1).astype(np.int16)
    return bool(np.all(np.all(f == t, axis=1) | np.all(f == -t, axis=1)))


# ---------------------------------------------------------------------------------------------
# onnxruntime


def make_session(path: Path, threads: int, optimize: bool, optimized_model_path: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3  # the NCHWc "hardware specific" notice on saving the optimized graph is expected
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: onnxruntime cannot load it ({reason[:200]})") from None


def run_logits(session, images: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    outs = [session.run(None, {INPUT_NAME: images[i : i + batch]})[0] for i in range(0, images.shape[0], batch)]
    return np.concatenate(outs)


def session_with_node_types(session_factory) -> tuple[dict[str, int], object]:
    """(node type counts of the graph onnxruntime actually runs, the session), the graph read back from
    the file onnxruntime writes to optimized_model_filepath."""
    with tempfile.TemporaryDirectory(prefix="q4bench-ort-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        session = session_factory(target)
        counts = Counter(n.op_type for n in onnx.load(str(target)).graph.node)
    return dict(sorted(counts.items())), session


def compare(reference: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement in percent, max |logit difference|)."""
    agreement = 100.0 * float(np.mean(reference.argmax(1) == logits.argmax(1)))
    return agreement, float(np.max(np.abs(reference.astype(np.float64) - logits.astype(np.float64))))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(logits.argmax(1) == labels))


def measure_speed(sessions: dict[str, object], config: VerifyConfig) -> tuple[dict[str, dict], dict[str, list[float]]]:
    """Interleaved: every round, in a rotating order, each file gets one untimed batch-64 run, then
    throughput_runs timed batch-64 runs back to back, then one untimed and latency_runs timed batch-1 runs.

    The untimed run matters: each session owns a thread pool whose workers spin for a while after a run;
    on 2 cores the previous file's spinning workers steal a core from the next file's first run (measured
    here: a single cold run per file and round put int8/fp32 at 1.54x, back-to-back runs at 1.85x).
    Throughput is what back-to-back batches achieve. Returns (per file: medians, per file: each round's
    median batch-64 seconds, for paired speedups)."""
    rng = np.random.default_rng(0)
    b64 = rng.standard_normal((THROUGHPUT_BATCH, 3, 32, 32), dtype=np.float32)
    b1 = b64[:1].copy()
    names = list(sessions)
    for name in names:  # warm-up: first runs allocate and pack weights
        for _ in range(WARMUP_RUNS):
            sessions[name].run(None, {INPUT_NAME: b64})
            sessions[name].run(None, {INPUT_NAME: b1})
    batch_s: dict[str, list[float]] = {n: [] for n in names}
    round_s: dict[str, list[float]] = {n: [] for n in names}
    single_s: dict[str, list[float]] = {n: [] for n in names}

    def timed(session, images, runs: int) -> list[float]:
        session.run(None, {INPUT_NAME: images})  # untimed: lets the other sessions' workers go idle
        out = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {INPUT_NAME: images})
            out.append(time.perf_counter() - start)
        return out

    for r in range(config.speed_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs = timed(sessions[name], b64, config.throughput_runs)
            batch_s[name] += runs
            round_s[name].append(statistics.median(runs))
            single_s[name] += timed(sessions[name], b1, config.latency_runs)
    summary = {
        n: {
            "latency_b1_ms": 1000.0 * statistics.median(single_s[n]),
            "throughput_b64": THROUGHPUT_BATCH / statistics.median(batch_s[n]),
            "timing_runs": {"batch64": len(batch_s[n]), "batch1": len(single_s[n])},
        }
        for n in names
    }
    return summary, round_s


# Nodes that do a layer's multiply-accumulates, in any of the three files' optimized graphs.
LAYER_OPS = {"Conv", "FusedConv", "QLinearConv", "Gemm", "FusedGemm", "QGemm", "MatMul", "MatMulInteger"}
_LAYER_NAME = re.compile(r"^((?:features|classifier)\.\d+)")


def layer_of(node_name: str, op_type: str, layer_names: list[str]) -> str:
    """The network layer a node of onnxruntime's optimized graph belongs to, or "other" (pooling,
    layout transposes, quantize/dequantize, reorders): node names keep the exported names' prefix."""
    if op_type not in LAYER_OPS:
        return "other"
    match = _LAYER_NAME.match(node_name)
    if match and match.group(1) in layer_names:
        return match.group(1)
    return layer_names[-1] if node_name.startswith(OUTPUT_NAME) else "other"  # the last layer writes the logits


def layer_times(paths: dict[str, Path], threads: int, runs: int, layer_names: list[str]) -> dict:
    """Milliseconds per batch-64 run spent in each layer's kernels, per file, from onnxruntime's
    profiler (separate profiled sessions, `runs` interleaved rounds; the profiler adds a little per
    node), and each layer's int8 speedup over fp32. Says where the int8/fp32
    throughput ratio comes from: which kernels gain and which do not."""
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((THROUGHPUT_BATCH, 3, 32, 32), dtype=np.float32)
    per_file: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="q4bench-ortprof-") as tmp:
        sessions = {}
        for name, path in paths.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            options.log_severity_level = 3
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / name)
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for _ in range(WARMUP_RUNS):
                sessions[name].run(None, {INPUT_NAME: x})
        # Interleaved like the throughput timing, so drift in load hits every file alike; each timed
        # run follows an untimed one of the same file (the other sessions' workers go idle meanwhile).
        names = list(sessions)
        for r in range(runs):
            for name in names[r % len(names):] + names[: r % len(names)]:
                sessions[name].run(None, {INPUT_NAME: x})
                sessions[name].run(None, {INPUT_NAME: x})
        for name, session in sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            model_runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
            timed = model_runs[WARMUP_RUNS:][1::2]  # the second run of each pair
            totals = dict.fromkeys([*layer_names, "other"], 0.0)
            for event in events:
                if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
                    continue
                if not any(begin <= event["ts"] <= end for begin, end in timed):
                    continue
                node = event["name"][: -len("_kernel_time")]
                layer = layer_of(node, event.get("args", {}).get("op_name", ""), layer_names)
                totals[layer] += event["dur"] / 1000.0 / len(timed)
            totals["total"] = sum(totals.values())
            per_file[name] = totals
    speedups = {
        k: per_file["fp32"][k] / per_file["int8"][k]
        for k in per_file["fp32"]
        if per_file["fp32"][k] > 0 and per_file["int8"][k] > 0
    }
    return {
        "method": f"onnxruntime profiler, {runs} interleaved rounds (per file, in a rotating order, one untimed and "
                  f"one profiled batch-{THROUGHPUT_BATCH} run) after {WARMUP_RUNS} warm-ups, {threads} intra-op threads; "
                  "kernel time per node, averaged over the profiled runs and summed by layer (pooling, transposes "
                  "and quantize nodes under 'other')",
        "ms_per_run": per_file,
        "int8_speedup_per_layer": speedups,
    }


def paired_speedup(reference_s: list[float], candidate_s: list[float]) -> float:
    """Median over rounds of reference time / candidate time, both timed in the same round: a load
    that drifts between rounds (other work on the host) cancels within each pair."""
    return statistics.median(r / c for r, c in zip(reference_s, candidate_s))


def _cpu_flags() -> dict[str, bool]:
    info = read_cpuinfo()
    return {k: k in info.flags for k in ("avx2", "avx512f", "avx512_vnni", "avx_vnni")} if info else {}


# ---------------------------------------------------------------------------------------------
# Entry point


def verify(config: VerifyConfig, log=print) -> dict:
    if not Path(config.onnx_dir).is_dir():
        raise UserError(f"{config.onnx_dir}: no such folder (pass the --out folder of q4bench export)")
    # Locked like export's folder, so an export cannot replace the files while they are being verified.
    with hold(config.onnx_dir, "verify-onnx", "--onnx"), torch_threads(config.threads):
        return _verify(config, log)


def _check_layers_match(paths: dict, metadata: dict, stages: list, checkpoint) -> None:
    """Every file's layer list (names and code shapes) is the checkpoint's, in order."""
    torch_shapes = [(s.name, tuple(s.codes.shape)) for s in stages]
    for name in FILES:
        try:
            file_shapes = [(l["name"], tuple(l["shape"])) for l in metadata[name]["layers"]]
        except (KeyError, TypeError):
            raise UserError(f"{paths[name]}: '{METADATA_KEY}' metadata has no readable 'layers' list") from None
        for found, expected in zip_longest(file_shapes, torch_shapes, fillvalue=("(none)", ())):
            if found != expected:
                raise UserError(
                    f"{paths[name]}: layer {found[0]} {list(found[1])} does not match checkpoint "
                    f"{checkpoint} layer {expected[0]} {list(expected[1])}; exported from another network?"
                )


def _score_files(paths: dict, config: VerifyConfig, images, labels, reference, log) -> tuple[dict, dict]:
    """Per file: size, agreement with PyTorch's logits, accuracy, the optimized graph's node types, and
    optimizations off against on; and the optimized sessions, kept for timing."""
    n_agree = min(config.agreement_images, len(images))
    files, sessions = {}, {}
    for name in FILES:
        node_types, session = session_with_node_types(
            lambda target, p=paths[name]: make_session(p, config.threads, True, target)
        )
        sessions[name] = session
        logits = run_logits(session, images)
        agreement, max_diff = compare(reference, logits)
        unoptimized = run_logits(make_session(paths[name], config.threads, False), images[:n_agree])
        off_agreement, off_diff = compare(logits[:n_agree], unoptimized)
        files[name] = {
            "bytes": paths[name].stat().st_size,
            "top1_agreement": agreement,
            "max_abs_logit_diff": max_diff,
            "test_acc": accuracy(logits, labels),
            "optimized_node_types": node_types,
            "optimizations_off_vs_all_on": {
                "images": n_agree,
                "top1_agreement": off_agreement,
                "max_abs_logit_diff": off_diff,
            },
        }
        log(f"  {name}.onnx: agreement {agreement:.2f}%, max |dlogit| {max_diff:.2e}, "
            f"test acc {files[name]['test_acc']:.2f}%")
    return files, sessions


def _record_codes(files: dict, models: dict, metadata: dict, paths: dict, stages: list) -> None:
    """The weight codes read back from the int4 and int8 files, against PyTorch's."""
    int4_layers, int8_layers = {}, {}
    for s in stages:
        codes, raw = int4_codes(models["int4"], s.name, paths["int4"])
        int4_layers[s.name] = {
            "distinct_codes": int(np.unique(codes).size),
            "pytorch_distinct_codes": int(np.unique(s.codes).size),
            "codes_equal_pytorch": bool(np.array_equal(codes, s.codes)),
            "packed_in_raw_data": raw,
        }
        int8_layers[s.name] = codes_equal_up_to_channel_sign(int8_codes(models["int8"], s.name, paths["int8"]), s.codes)
    files["int4"]["distinct_codes"] = {k: v["distinct_codes"] for k, v in int4_layers.items()}
    files["int4"]["codes"] = int4_layers
    files["int4"]["codes_identical_to_pytorch"] = all(v["codes_equal_pytorch"] for v in int4_layers.values())
    files["int8"]["codes_identical_to_pytorch_up_to_channel_sign"] = all(int8_layers.values())
    files["int8"]["activation_type"] = metadata["int8"].get("activation_type")
    files["int8"]["calibration_images"] = metadata["int8"].get("calibration_images")


def _headline_figures(files: dict, batch_seconds: dict, torch_acc: float) -> dict:
    return {
        "size_ratio_fp32_int4": files["fp32"]["bytes"] / files["int4"]["bytes"],
        "int8_speedup_b64_over_fp32": paired_speedup(batch_seconds["fp32"], batch_seconds["int8"]),  # median of per-round ratios
        "int8_speedup_b64_ratio_of_medians": files["int8"]["throughput_b64"] / files["fp32"]["throughput_b64"],
        "int4_speedup_b64_over_fp32": paired_speedup(batch_seconds["fp32"], batch_seconds["int4"]),
        "int8_test_acc_drop_points": torch_acc - files["int8"]["test_acc"],
    }


def _targets(files: dict, figures: dict) -> dict:
    return {
        "int4_top1_agreement_ge_99.9": files["int4"]["top1_agreement"] >= TARGET_INT4_AGREEMENT,
        "int4_max_abs_logit_diff_lt_1e-3": files["int4"]["max_abs_logit_diff"] < TARGET_INT4_MAX_LOGIT_DIFF,
        "int4_codes_identical": files["int4"]["codes_identical_to_pytorch"],
        "size_ratio_ge_7.8": figures["size_ratio_fp32_int4"] >= TARGET_SIZE_RATIO,
        "int8_acc_within_0.3": figures["int8_test_acc_drop_points"] <= TARGET_INT8_ACC_DROP,
        "int8_throughput_ge_2x_fp32": figures["int8_speedup_b64_over_fp32"] >= TARGET_INT8_SPEEDUP,
        "note": "measured by this run; the accuracy targets are meant for the full 10,000-image test set",
    }


def _environment(config: VerifyConfig, load_1min: list[float]) -> dict:
    import onnxruntime as ort

    return {
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before_after": load_1min,
        "timing_method": (
            f"medians over {config.speed_rounds} interleaved rounds (each, per file in a rotating order: 1 "
            f"untimed and {config.throughput_runs} timed batch-{THROUGHPUT_BATCH} runs back to back, then 1 "
            f"untimed and {config.latency_runs} timed batch-1 runs) after 2 warm-up runs; speedups: median "
            "over rounds of the per-round ratio of median times; "
            "random input; intra_op threads as given, inter_op 1, ORT_ENABLE_ALL"
        ),
    }


def _verify(config: VerifyConfig, log) -> dict:
    """Check the exported files against their checkpoint, score and time them; verify.json holds it all."""
    model, method, state = model_from_checkpoint(config.checkpoint)
    stages = network_stages(model, method.name)
    if stages[0].codes is None:
        raise UserError(f"--checkpoint {config.checkpoint}: method {method.name!r} exports fp32.onnx alone (its "
                        "MXFP4/NVFP4 weights decoded); verify-onnx checks the int4/int8 files of symmetric 4-bit methods")
    onnx_dir = Path(config.onnx_dir)
    paths, models, metadata = _read_files(onnx_dir, stages, config.checkpoint)
    images, labels, source = _test_images(config, state)
    log(f"verifying {onnx_dir} against {config.checkpoint} on {len(labels)} test images ({source}), "
        f"{config.threads} threads")

    load_before = os.getloadavg()
    reference = _pytorch_logits(model, images)
    files, sessions = _score_files(paths, config, images, labels, reference, log)
    _record_codes(files, models, metadata, paths, stages)
    batch_seconds, per_layer = _time_files(files, sessions, paths, [s.name for s in stages], config, log)
    load_1min = [load_before[0], os.getloadavg()[0]]

    torch_acc = accuracy(reference, labels)
    figures = _headline_figures(files, batch_seconds, torch_acc)
    result = {
        "provenance": stamp(),  # the code that verified; the exported files carry their own
        "checkpoint": str(config.checkpoint),
        "method": method.name,
        "epoch": int(state.get("epoch", 0)),
        "onnx_dir": str(onnx_dir),
        "data": source,
        "test_images": len(labels),
        "threads": config.threads,
        "pytorch_test_acc": torch_acc,
        **figures,
        "files": files,
        "layer_times_b64": per_layer,
        "targets": _targets(files, figures),
        "environment": _environment(config, load_1min),
    }
    out = onnx_dir / VERIFY_FILE
    write_json_atomic(out, result)
    log(
        f"fp32/int4 size ratio {figures['size_ratio_fp32_int4']:.2f}; int8 b64 throughput "
        f"{figures['int8_speedup_b64_over_fp32']:.2f}x fp32; "
        f"int8 test acc {files['int8']['test_acc']:.2f}% vs PyTorch {torch_acc:.2f}%; wrote {out}"
    )
    return result


def _read_files(onnx_dir: Path, stages: list, checkpoint) -> tuple[dict, dict, dict]:
    """(paths, models, metadata) of the exported files, each per file name; their layers must be the checkpoint's."""
    paths = {name: onnx_dir / f"{name}.onnx" for name in FILES}
    models = {name: load_onnx(path) for name, path in paths.items()}
    metadata = {name: file_metadata(models[name], paths[name]) for name in FILES}
    _check_layers_match(paths, metadata, stages, checkpoint)
    return paths, models, metadata


def _test_images(config: VerifyConfig, state: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """(normalized images, labels, where they come from): the checkpoint's test set, its first --limit images."""
    _, test, source = checkpoint_data(state, config.data_dir)
    if config.limit is not None:
        test = test.head(config.limit)
    return np.ascontiguousarray(datamod.normalize(test.images).numpy()), test.labels.numpy(), source


def _pytorch_logits(model, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate(
            [model(torch.from_numpy(images[i : i + EVAL_BATCH])).numpy() for i in range(0, len(images), EVAL_BATCH)]
        )


def _time_files(files: dict, sessions: dict, paths: dict, layer_names: list[str], config: VerifyConfig,
                log) -> tuple[dict, dict]:
    """Each file's speed (into files) from the scoring sessions, then each layer's kernel time from profiled
    sessions; (per file the timed batch seconds, the per-layer times)."""
    log(f"  timing: {config.speed_rounds} interleaved rounds")
    speeds, batch_seconds = measure_speed(sessions, config)
    for name, speed in speeds.items():
        files[name].update(speed)
    sessions.clear()  # their thread pools would compete with the profiled sessions below
    log(f"  per-layer kernel times: onnxruntime profiler, {config.profile_runs} runs per file")
    return batch_seconds, layer_times(paths, config.threads, config.profile_runs, layer_names)
