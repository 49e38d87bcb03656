"""gtapp: turn a TinyLM's LoRA update into an LLM update with a learned Gradient Transformer.

Data flows through the modules in this order:
tasks/datasets -> finetune (TinyLM, optional DP-SGD) -> lora (the update: UpdateVector)
-> mapper (Gradient Transformer) -> generate (LLM adapter) -> evaluate -> bench.
The core library (everything but ``gtapp.cli``, the command line over the job system)
imports neither Celery nor SQLAlchemy.
"""

__version__ = "0.1.0"
