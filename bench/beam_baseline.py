"""The Beam RunInference baseline of ``bench.worker_throughput`` (text task).

Kept in its own importable module on purpose: Beam pickles the model handler and the length
function into the pipeline, and classes/functions of an importable module are pickled *by
reference*. So the handler below finds the one already-loaded model through :data:`SHARED` (the
same object every other variant uses) instead of a pickled copy, and the batch recorder sees
the batches the in-process runner actually formed.

Compatibility shim: apache-beam 2.77's ``apache_beam.ml.inference.huggingface_inference`` does
``import tensorflow as tf`` and ``from transformers import TFAutoModel`` at import time. Neither
exists here (no TensorFlow; transformers 5 dropped its TF classes), so the module cannot be
imported as shipped (fixed upstream by apache/beam#38110). :func:`import_hf_handler` installs
placeholders for exactly those two names while the module imports, then removes the fake
``tensorflow`` again. The PyTorch pipeline handler never touches either name.
"""

from __future__ import annotations

import copy
import importlib.machinery
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

#: filled by the benchmark before a pipeline runs: "pipeline" (a transformers text-generation
#: pipeline around the shared model) and "tokenizer" (its tokenizer)
SHARED: dict[str, Any] = {}
#: the prompts of each batch RunInference handed to the model, in the order they ran (the benchmark
#: counts their tokens after the clock stops: the baseline is timed on its own work only)
BATCHES: list[list[str]] = []
_TF_AUTO = "TFAutoModel"


def import_hf_handler() -> Any:
    """``HuggingFacePipelineModelHandler`` from the installed Beam (see the module docstring)."""
    if "apache_beam.ml.inference.huggingface_inference" in sys.modules:
        return sys.modules["apache_beam.ml.inference.huggingface_inference"].HuggingFacePipelineModelHandler
    import torch._dynamo  # noqa: F401 - imported before the stub: it scans sys.modules for specs
    import transformers
    import transformers.pipelines  # noqa: F401

    stub = False
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        tf = types.ModuleType("tensorflow")
        tf.Tensor = type("Tensor", (), {})  # type: ignore[attr-defined]
        tf.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None)
        sys.modules["tensorflow"] = tf
        stub = True
    added_tf_auto = False
    try:
        getattr(transformers, _TF_AUTO)
    except (ImportError, AttributeError):
        setattr(transformers, _TF_AUTO, type(_TF_AUTO, (), {}))
        added_tf_auto = True
    try:
        from apache_beam.ml.inference.huggingface_inference import HuggingFacePipelineModelHandler
    finally:
        if stub:
            del sys.modules["tensorflow"]
        if added_tf_auto:
            delattr(transformers, _TF_AUTO)
    return HuggingFacePipelineModelHandler


def token_length(prompt: str) -> int:
    """Beam's ``batch_length_fn``: the prompt's token count (the same tokenizer genbatch sorts by)."""
    return len(SHARED["tokenizer"](prompt, add_special_tokens=True)["input_ids"])


_Base: Any = import_hf_handler()


class SharedPipelineHandler(_Base):
    """The stock ``HuggingFacePipelineModelHandler``; only ``load_model`` returns the shared pipeline.

    Everything Beam does per batch (BatchElements, the length-bucketed stateful batching,
    ``run_inference`` calling the pipeline, PredictionResult wrapping, metrics) is unchanged.
    Model load is excluded exactly as it is for genbatch (which is handed a loaded runner); the
    stock load from the local path is timed separately by :func:`stock_load_seconds`.
    """

    def load_model(self) -> Any:
        return SHARED["pipeline"]

    def run_inference(self, batch: Any, pipeline: Any, inference_args: Any = None) -> Any:
        BATCHES.append(list(batch))
        return super().run_inference(batch, pipeline, inference_args)


def handler_kwargs(model_dir: Path, *, max_batch_size: int, min_batch_size: int,
                   bucket_boundaries: list[int]) -> dict[str, Any]:
    """The handler configuration Beam's docs recommend for variable-length text on 2.77.

    ``batch_length_fn`` + ``batch_bucket_boundaries`` turn on length-aware batching; Beam only
    honours them on its stateful batching path, which ``max_batch_duration_secs`` selects.
    """
    return {
        "task": "text-generation",
        "model": str(model_dir),  # a local directory: transformers never contacts the hub for it
        "device": "CPU",
        "load_pipeline_args": {"model_kwargs": {"use_safetensors": True}},
        "min_batch_size": min_batch_size,
        "max_batch_size": max_batch_size,
        "max_batch_duration_secs": 1,
        "batch_length_fn": token_length,
        "batch_bucket_boundaries": bucket_boundaries,
    }


def stock_load_seconds(kwargs: dict[str, Any]) -> float:
    """Seconds the unmodified handler takes to load the pipeline from the local model directory."""
    handler = _Base(**copy.deepcopy(kwargs))  # the handler writes 'device' into load_pipeline_args
    t0 = time.perf_counter()
    handler.load_model()
    return time.perf_counter() - t0


def run_pipeline(prompts: list[str], out_dir: Path, kwargs: dict[str, Any], inference_args: dict[str, Any]) -> None:
    """Create → RunInference → JSON → WriteToText on the in-process FnApiRunner (the timed work)."""
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        _ = (
            p
            | "Prompts" >> beam.Create(prompts)
            | "Generate" >> RunInference(SharedPipelineHandler(**copy.deepcopy(kwargs)), inference_args=inference_args)
            | "Json" >> beam.Map(_to_json)
            | "Write" >> beam.io.WriteToText(str(out_dir / "part"), file_name_suffix=".jsonl")
        )


def rows_written(out_dir: Path) -> int:
    """Rows :func:`run_pipeline` wrote to ``out_dir`` (bookkeeping, outside the timed region)."""
    return sum(path.read_bytes().count(b"\n") for path in out_dir.glob("part*.jsonl"))


def _to_json(result: Any) -> str:
    return json.dumps({"prompt": result.example, "output": result.inference[0]["generated_text"]})
