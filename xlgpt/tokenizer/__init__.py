"""Text to token ids: hf.py through Hugging Face `tokenizers` (the reference); bpe.py the same algorithm in
plain Python, whose rules tabs.py writes as the book's tokenizer tabs; tables.py the vocabulary and merges."""
