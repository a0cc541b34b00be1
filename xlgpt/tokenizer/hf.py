"""Byte-level BPE tokenizers (GPT-2's and the bundled model's), through Hugging Face `tokenizers`."""

from pathlib import Path

from xlgpt.package import XlgptError, shipped
from xlgpt.tokenizer.tables import symbol_text

WEIGHTS_DIR = shipped("weights")
GPT2_TOKENIZER = WEIGHTS_DIR / "gpt2-tokenizer"
GPT2_VOCAB_SIZE = 50257
# (vocabulary, merges) file names: Hugging Face's and OpenAI's original ones
FILE_PAIRS = [("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")]


def check_text(text, what="the prompt"):
    """Refuse text that is not Unicode text: a lone surrogate (bytes that were not UTF-8, smuggled through
    a command line or a file) has no UTF-8 form, so no tokenizer and no workbook can hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise XlgptError(
            f"{what} is not valid text: character {e.start} is a lone surrogate "
            f"(U+{ord(text[e.start]):04X}; bytes that are not UTF-8?)"
        )


class Tokenizer:
    def __init__(self, vocab_file, merges_file):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers

        self.files = (Path(vocab_file), Path(merges_file))
        try:
            tok = HFTokenizer(models.BPE.from_file(str(vocab_file), str(merges_file)))
        except Exception as e:  # tokenizers raises plain Exceptions for bad files
            raise XlgptError(f"{vocab_file}: cannot load tokenizer ({e})")
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex split
        tok.decoder = decoders.ByteLevel()
        self.hf = tok

    @property
    def vocab_size(self):
        return self.hf.get_vocab_size()

    def encode(self, text):
        if not text:
            raise XlgptError("the prompt is empty")
        check_text(text)
        ids = self.hf.encode(text).ids
        if self.decode(ids) != text:  # BPE without an unknown token silently drops what it cannot encode
            raise XlgptError(f"the tokenizer cannot encode {text!r} (it has no tokens for some of its characters)")
        return ids

    def decode(self, ids):
        return self.hf.decode(list(ids))

    def token_text(self, i):
        """What token i stands for, as text a cell can show (a piece of a UTF-8 character as <0xC3>)."""
        symbol = self.hf.id_to_token(i)
        return self.decode([i]) if symbol is None else symbol_text(symbol)


def find(directory):
    directory = Path(directory)
    for vocab, merges in FILE_PAIRS:
        if (directory / vocab).is_file() and (directory / merges).is_file():
            return Tokenizer(directory / vocab, directory / merges)
    return None


def for_checkpoint(ckpt):
    """The checkpoint's own tokenizer files, else GPT-2's for a GPT-2-sized vocabulary, else None."""
    found = find(ckpt.path) if ckpt.path else None
    if found is None and ckpt.config.vocab_size == GPT2_VOCAB_SIZE:
        found = find(GPT2_TOKENIZER)
    if found is not None and found.vocab_size != ckpt.config.vocab_size:
        raise XlgptError(
            f"{found.files[0]}: tokenizer has {found.vocab_size} tokens, the model {ckpt.config.vocab_size}"
        )
    return found


def load(name_or_dir):
    """`gpt2` for the vendored GPT-2 tokenizer, or a directory with tokenizer files."""
    if str(name_or_dir) == "gpt2":
        return find(GPT2_TOKENIZER)
    found = find(name_or_dir)
    if found is None:
        raise XlgptError(f"{name_or_dir}: no tokenizer files (vocab.json + merges.txt, or encoder.json + vocab.bpe)")
    return found
