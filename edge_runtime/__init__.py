"""The edge runtime: what runs on every device (onnxruntime, aiokafka; never torch or faust)."""
