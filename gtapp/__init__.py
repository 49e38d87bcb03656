"""gtapp: turn a TinyLM's LoRA update into an LLM update with a learned Gradient Transformer.

Data flows through the modules in this order:
tasks/datasets -> finetune (TinyLM, optional DP-SGD) -> update (update vectors)
-> mapper (Gradient Transformer) -> generate (LLM adapter) -> evaluate -> bench.
The core library imports neither Celery nor SQLAlchemy.
"""

__version__ = "0.1.0"
