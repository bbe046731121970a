"""A stand-in for onnxruntime's GPU sessions where no GPU build of onnxruntime can run.

Tests put :class:`InferenceSession` in place of ``onnxruntime.InferenceSession`` (the rest of the
installed onnxruntime, its optimizer and fp16 converter, stays real). It follows the real API of
``onnxruntime/capi/onnxruntime_inference_collection.py``: every method here exists there with
the same parameter names, which ``test_onnxruntime_cuda.py`` checks against the installed
package (``InferenceSession``, ``IOBinding``, ``NodeArg``'s ``name``/``shape``/``type``).

What it models, as onnxruntime does:
- providers given as names or (name, options) tuples; an unknown provider option is refused
  (the names are those onnxruntime's own SD demo passes, also checked by the test);
  ``enable_fallback`` read from the keyword arguments;
- ``enable_cuda_graph``: the session can be made to refuse it (``refuse_cuda_graph``) with
  ONNX Runtime's message; once a graph is captured (the first run), rebinding an input or output
  raises, as onnxruntime's own pinned bindings do (for CUDA it would silently replay the old
  addresses, which is the bug this catches);
- inputs and outputs read from the ONNX file (names, static shapes, element types).

What it cannot do is run the graph (its fused contrib ops have CUDA kernels only): a run reads
the bound ``sample`` buffer and writes ``FILL * sample[:, :C_out]`` into the output buffer, in
the output's dtype, from the addresses bound (host memory in tests). That is enough to test what
sdopt owns: binding by name in the graph's dtypes and output shape, copying each call's inputs
into the captured buffers, and cloning the output.
"""

from __future__ import annotations

import ctypes

import numpy as np

FILL = 0.5
PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# Options sdopt passes, by provider: checked against onnxruntime's own files by the test.
PROVIDER_OPTIONS = {
    "CUDAExecutionProvider": {"device_id", "arena_extend_strategy", "enable_cuda_graph",
                              "user_compute_stream"},
    "TensorrtExecutionProvider": {"device_id", "trt_fp16_enable", "trt_engine_cache_enable",
                                  "trt_engine_cache_path", "trt_timing_cache_enable",
                                  "trt_timing_cache_path"},
    "CPUExecutionProvider": set(),
}
CUDA_GRAPH_REFUSED = ("This session cannot use the CUDA Graph feature as requested by the user "
                      "as all compute graph nodes have not been partitioned to the CUDA EP.")
_ONNX_TYPES = {1: "tensor(float)", 10: "tensor(float16)", 16: "tensor(bfloat16)",
               7: "tensor(int64)", 6: "tensor(int32)", 9: "tensor(bool)"}
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class NodeArg:
    def __init__(self, name: str, shape: list, type: str):  # noqa: A002 - the real attribute
        self.name, self.shape, self.type = name, shape, type


class SessionOptions:
    """Only what a test may read back; sdopt builds the real ``onnxruntime.SessionOptions``."""


class IOBinding:
    def __init__(self, session: "InferenceSession"):
        self._session = session
        self._inputs: dict[str, dict] = {}
        self._outputs: dict[str, dict] = {}
        self._pinned = False

    def _reject_if_pinned(self, what: str) -> None:
        if self._pinned:
            raise ValueError(f"cannot {what}: a CUDA graph was captured with this binding's "
                             "buffers; replay would read the old ones")

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        self._reject_if_pinned("rebind inputs")
        self._inputs[name] = {"device_type": device_type, "device_id": device_id,
                              "dtype": np.dtype(element_type), "shape": list(shape),
                              "ptr": int(buffer_ptr)}

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None,
                    buffer_ptr=None):
        self._reject_if_pinned("rebind outputs")
        if buffer_ptr is not None and (element_type is None or shape is None):
            raise ValueError("`element_type` and `shape` are to be provided if pre-allocated "
                             "memory is provided")
        self._outputs[name] = {"device_type": device_type, "device_id": device_id,
                               "dtype": np.dtype(element_type), "shape": list(shape),
                               "ptr": int(buffer_ptr)}

    def synchronize_inputs(self):
        pass

    def synchronize_outputs(self):
        pass

    def clear_binding_inputs(self):
        self._reject_if_pinned("clear inputs")
        self._inputs.clear()

    def clear_binding_outputs(self):
        self._reject_if_pinned("clear outputs")
        self._outputs.clear()


def _array(bound: dict) -> np.ndarray:
    count = int(np.prod(bound["shape"]))
    raw = (ctypes.c_uint8 * (count * bound["dtype"].itemsize)).from_address(bound["ptr"])
    return np.frombuffer(raw, dtype=bound["dtype"], count=count).reshape(bound["shape"])


class InferenceSession:
    # Every session made in this process (tests read the providers they were given).
    _made: list["InferenceSession"] = []
    # Set by a test: sessions asked for a CUDA graph fail as onnxruntime does when a node is not
    # on the CUDA provider.
    refuse_cuda_graph = False

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None,
                 **kwargs):
        import onnx

        self._enable_fallback = int(kwargs.get("enable_fallback", 1)) == 1
        self._sess_options = sess_options
        self._providers, self._provider_options = [], []
        for provider in providers or ["CPUExecutionProvider"]:
            name, options = provider if isinstance(provider, tuple) else (provider, {})
            if name not in PROVIDERS:
                raise ValueError(f"Unknown Provider Type: {name}")
            unknown = set(options) - PROVIDER_OPTIONS[name]
            if unknown:
                raise RuntimeError(f"[ONNXRuntimeError] : unknown option(s) {sorted(unknown)} "
                                   f"for {name}")
            self._providers.append(name)
            self._provider_options.append({k: str(v) for k, v in options.items()})
        cuda = dict(zip(self._providers, self._provider_options)).get("CUDAExecutionProvider", {})
        self._cuda_graph = cuda.get("enable_cuda_graph", "").lower() in ("1", "true")
        if self._cuda_graph and InferenceSession.refuse_cuda_graph:
            raise RuntimeError(CUDA_GRAPH_REFUSED)
        graph = onnx.load(str(path_or_bytes), load_external_data=False).graph
        self._model_path = str(path_or_bytes)
        self._ops = {(n.domain or "ai.onnx", n.op_type) for n in graph.node}
        weights = {i.name for i in graph.initializer}

        def arg(value):
            t = value.type.tensor_type
            return NodeArg(value.name, [d.dim_value if d.HasField("dim_value") else d.dim_param
                                        for d in t.shape.dim], _ONNX_TYPES[t.elem_type])

        self._inputs = [arg(v) for v in graph.input if v.name not in weights]
        self._outputs = [arg(v) for v in graph.output]
        self._captured: tuple | None = None
        self.runs = 0
        InferenceSession._made.append(self)

    def get_session_options(self):
        return self._sess_options

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def get_providers(self):
        return list(self._providers)

    def get_provider_options(self):
        return dict(zip(self._providers, self._provider_options))

    def io_binding(self):
        return IOBinding(self)

    def run(self, output_names, input_feed, run_options=None):
        raise NotImplementedError("the fake GPU session runs through IO binding only")

    def run_with_iobinding(self, iobinding, run_options=None):
        if iobinding._session is not self:
            raise ValueError("IOBinding must be used with the session that created it.")
        missing = [a.name for a in self._inputs if a.name not in iobinding._inputs] + \
            [a.name for a in self._outputs if a.name not in iobinding._outputs]
        if missing:
            raise RuntimeError(f"[ONNXRuntimeError] : not bound: {missing}")
        for arg in self._inputs:
            bound = iobinding._inputs[arg.name]
            if bound["dtype"] != np.dtype(_NUMPY[arg.type]) or bound["shape"] != arg.shape:
                raise RuntimeError(f"[ONNXRuntimeError] : input {arg.name} bound as "
                                   f"{bound['dtype']}{bound['shape']}, the graph takes "
                                   f"{arg.type}{arg.shape}")
        if self._cuda_graph:
            addresses = tuple(sorted((n, b["ptr"]) for n, b in
                                     {**iobinding._inputs, **iobinding._outputs}.items()))
            if self._captured is None:
                self._captured = (iobinding, addresses)
                iobinding._pinned = True
            elif self._captured != (iobinding, addresses):
                raise ValueError("a CUDA graph was captured with other buffers: replay would "
                                 "read and write the captured addresses")
        sample = _array(iobinding._inputs["sample"])
        for arg in self._outputs:
            out = _array(iobinding._outputs[arg.name])
            out[...] = (FILL * sample[:, :out.shape[1]].astype(np.float32)).astype(out.dtype)
        self.runs += 1
