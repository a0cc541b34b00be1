"""Text to token ids: hf.py through Hugging Face `tokenizers` (the reference); sheet.py as tabs of the book."""
