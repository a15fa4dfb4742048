"""CLIP's BPE vocabulary, read from the file open_clip ships, without importing open_clip.

`open_clip.tokenizer` imports torch (and the package, transformers and torchvision): seconds that a
torch-free text export (`retrieval.models.onnx_text`) does not need. The vocabulary is the same data
open_clip's `SimpleTokenizer` builds from its `bpe_simple_vocab_16e6.txt.gz` (tests compare the two),
in the shape `clip_tokenizer_json` reads (as it reads open_clip's tokenizer): `encoder`, `bpe_ranks`,
the special ids and the context length.
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
MERGES = 49152 - 256 - 2  # as open_clip: the merges after the header line, up to this many
SPECIAL = ("<start_of_text>", "<end_of_text>")


@dataclass(frozen=True)
class ClipVocabulary:
    encoder: dict[str, int]
    bpe_ranks: dict[tuple[str, str], int]
    context_length: int

    @property
    def sot_token_id(self) -> int:
        return self.encoder[SPECIAL[0]]

    @property
    def eot_token_id(self) -> int:
        return self.encoder[SPECIAL[1]]


def open_clip_folder() -> Path:
    """Where the installed open_clip package lives (found, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, which CLIP's BPE uses."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


@lru_cache(maxsize=2)
def _tables(path: str) -> tuple[dict, dict]:
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:MERGES + 1]]
    symbols = list(bytes_to_unicode().values())
    vocabulary = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges] + list(SPECIAL)
    return dict(zip(vocabulary, range(len(vocabulary)))), dict(zip(merges, range(len(merges))))


def clip_vocabulary(context_length: int, path: Path | None = None) -> ClipVocabulary:
    """The vocabulary of open_clip's default CLIP tokenizer (its packaged BPE file unless `path`)."""
    encoder, ranks = _tables(str(path or open_clip_folder() / VOCAB_FILE))
    return ClipVocabulary(encoder=encoder, bpe_ranks=ranks, context_length=int(context_length))


def clip_tokenizer_json(simple_tokenizer) -> str:
    """open_clip's SimpleTokenizer (or a `ClipVocabulary`) as a `tokenizers` BPE model (same vocabulary and merges)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    merges = [pair for pair, _ in sorted(simple_tokenizer.bpe_ranks.items(), key=lambda item: item[1])]
    tokenizer = Tokenizer(models.BPE(vocab=dict(simple_tokenizer.encoder), merges=merges, end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),  # re.findall drops the spaces between matches
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return tokenizer.to_str()
