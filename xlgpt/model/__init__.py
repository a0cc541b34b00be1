"""Checkpoints in: Hugging Face GPT-2 folders (config.json + model.safetensors), seeded random ones, the
hub's cache and imports (hub.py); out: a Checkpoint of named float32 tensors (checkpoint.py).
"""
