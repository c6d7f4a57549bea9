"""Timing benchmarks: how fast WCC runs on this machine, against the dense conv it replaces.

* :mod:`bench.timing.probes` - CPU, NVML and Jetson probes.
* :mod:`bench.timing.energy` - energy over timed windows (NVML counter, Jetson rails).
* :mod:`bench.timing.harness` - warm-up, device-synchronised samples, median and IQR.
* :mod:`bench.timing.shapes` - named shape sets (derived from the models, plus extras).
* :mod:`bench.timing.layer` - WCC per backend vs the best dense 1x1 conv vs QuantConv2d.
* :mod:`bench.timing.model` - DeepLabV3+ end to end: latency, peak and activation memory.
* :mod:`bench.timing.runtimes` - deployed dense baselines: ONNX Runtime FP32 / static int8,
  ``torch.compile``, OpenVINO, TensorRT (each records why when it cannot run).
* :mod:`bench.timing.floor` - measured bandwidth and GEMM peaks, the floor of every row.
* :mod:`bench.timing.rounds` - rounds: fresh processes, interleaved rows, merged into one record.
* :mod:`bench.timing.cli` - ``python -m bench timing``.
* :mod:`bench.timing.ab` - ``python -m bench ab BASE NEW``: two revisions' rounds alternated.
* :mod:`bench.timing.gate_check` - the gate's false-alarm and detection rates here (``nox -s gate_check``).

Importing this package is light: torch and the models load with the submodules that need them.
"""
