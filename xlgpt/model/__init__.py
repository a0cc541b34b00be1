"""GPT-2 without sheets: checkpoints in Hugging Face format (checkpoint.py: seeded random ones too), the hub's
cache and imports (hub.py), sparse autoencoders (sae.py), and the NumPy reference: the forward pass with the
interventions and instruments (reference.py) and its backward pass and optimizers (backward.py).
"""
