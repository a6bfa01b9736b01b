"""Generation benchmark: onnxruntime-genai, a plain-onnxruntime decode loop, transformers and the
edge runtime's no-cache path, side by side on SmolLM2-135M-Instruct (issue 12).

    .venv/bin/python -m benchmarks.generation.bench_generation --help
"""
