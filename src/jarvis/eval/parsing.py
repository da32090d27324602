"""Answer extraction for the Cambrian-style scorers, in two modes.

``compat`` functions reproduce the extractors of the reference scorers
(aimagelab/JARVIS 17426c1, ``cambrian/eval/eval/<b>/<b>_test.py``) quirks included; benchmarks-spec.md §2 describes
them and §9 pins them with golden vectors. ``fixed`` functions apply the corrections of benchmarks-spec.md §3.
A fixed extractor returns ``None`` for an answer it cannot read: such an answer is *unparseable*, scored wrong and
counted (benchmarks-spec.md §3 #3, #9).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Order matters in compat mode: "answer is" is tried before "answer is:", which is the quirk behind
# GV-MCQ-15 ("The answer is: D" -> ":"), benchmarks-spec.md §3 #4.
_COMPAT_KEYWORDS = ("answer is", "answer is:", "answer:")

# Fixed-mode keyword: the last "answer is" / "answer:" (optionally "answer is:") in the text.
_FIXED_KEYWORD = re.compile(r"answer\s*(?:is\s*:?|:)")

# A standalone letter token at the start: "b", "(b)", "b.", "b)", "(b).", "b:", "b," followed by whitespace or
# the end (benchmarks-spec.md §3 #3).
_LETTER_TOKEN = re.compile(r"^(?:\(([a-z])\)|([a-z]))[.:,)]?(?=\s|$)")

_PUNCT = ".,:;!?()[]\"'`"


def gt_letter(gt_answer: str) -> str:
    """The gt letter of an ``"(A)"``-style ground truth: the second character of the lowercased string.

    A one-character ground truth (``"A"``) is taken as is, as BLINK's scorer does (benchmarks-spec.md §2.5).
    """
    gt = gt_answer.lower()
    if not gt:
        raise ValueError("empty gt_answer: every answer line must carry its ground truth")
    return gt[1] if len(gt) > 1 else gt[0]


# --------------------------------------------------------------------------------------------------------------
# compat extractors (benchmarks-spec.md §2)
# --------------------------------------------------------------------------------------------------------------


def mcq_compat(answer: str, trailing: str = ".", truncate: bool = True) -> str:
    """The reference "MCQ extractor" (benchmarks-spec.md §2.1 steps 1-4).

    ``trailing`` is ``"."`` for ade/coco and ``".:,"`` for omni and MMVP; ``truncate=False`` is MMVP's variant,
    which keeps the whole remainder instead of its first character.
    """
    text = answer.lower().strip()
    for keyword in _COMPAT_KEYWORDS:
        if keyword in text:
            text = text.split(keyword)[-1]
    text = text.strip().rstrip(trailing).lstrip("(").rstrip(")")
    if truncate and len(text) > 1:
        # Quirk (fixed by §3 #3): free text collapses to its first character, "below" -> "b".
        text = text[0]
    return text


def blink_compat(answer: str) -> str:
    """BLINK's extractor (benchmarks-spec.md §2.5): the first word of the text before the first ``.``."""
    head = answer.split(".")[0].lower().strip()
    return head.split(" ")[0].lstrip("(").rstrip(")")


def first_token_compat(answer: str) -> str:
    """MMStar's and POPE's extractor (benchmarks-spec.md §2.7, §2.8).

    Raises IndexError on an empty or all-whitespace answer, exactly as the reference does (GV-MMSTAR-06).
    """
    tokens = answer.lower().split()
    if not tokens:
        raise IndexError(f"compat scorer crash: empty answer {answer!r} (reference behaviour, spec §2.7)")
    return tokens[0].rstrip(".:,")


def exact_compat(answer: str) -> str:
    """MME's and GQA's normalisation: lowercase, then remove trailing dots (benchmarks-spec.md §2.6)."""
    return answer.lower().rstrip(".")


# --------------------------------------------------------------------------------------------------------------
# fixed extractors (benchmarks-spec.md §3)
# --------------------------------------------------------------------------------------------------------------


def _norm_text(text: str) -> str:
    """Lowercase, collapse whitespace and strip surrounding punctuation, for option-text comparison."""
    return " ".join(text.lower().split()).strip(_PUNCT + " ")


def letter_fixed(answer: str, options: Sequence[str] | None = None) -> str | None:
    """Robust MCQ letter extraction (benchmarks-spec.md §3 #3, #4, #5, #6, #7, #9).

    1. If "answer is" / "answer:" occurs, keep the text after its last occurrence and strip leading punctuation
       and whitespace (fix #4: "The answer is: D" -> "d").
    2. Accept a standalone letter token at the start (one letter, optionally in parentheses, optionally followed
       by ``.`` ``:`` ``,`` or ``)``, then whitespace or the end). With options, the letter must name one of them;
       without, it must be a-f. If the rest of the answer is exactly *another* option's text ("A. Closed" when A is
       "Open"), the answer contradicts itself and is unparseable; "A. Open" is accepted (fix #6).
    3. Otherwise map an exact (case-insensitive, punctuation-trimmed) option text to its letter, comparing the
       full normalised answer with the lowercased options (fix #5: "pillow" -> "b", "3" -> "c").
    4. Otherwise return None (unparseable), instead of the first character (fix #3: "below" is not "b").
    """
    text = answer.strip().lower()
    matches = list(_FIXED_KEYWORD.finditer(text))
    if matches:
        text = text[matches[-1].end() :].lstrip(_PUNCT.replace("(", "") + " \t\n")
        # A leading "(" is kept so that "(c)" still reads as a parenthesised letter.
    n_letters = len(options) if options else 6
    valid = {chr(ord("a") + i) for i in range(n_letters)}
    norm_options = [_norm_text(o) for o in options] if options else []

    m = _LETTER_TOKEN.match(text)
    if m:
        letter = m.group(1) or m.group(2)
        rest = _norm_text(text[m.end() :])
        if letter in valid:
            if rest and rest in norm_options and norm_options.index(rest) != ord(letter) - ord("a"):
                return None
            return letter
    whole = _norm_text(text)
    if whole and whole in norm_options:
        if norm_options.count(whole) > 1:
            return None  # ambiguous option texts cannot name one letter
        return chr(ord("a") + norm_options.index(whole))
    return None


def yes_no_fixed(answer: str) -> str | None:
    """Yes/no reading (benchmarks-spec.md §3 #8, #10): the first word with punctuation stripped.

    Returns "yes", "no", or None (the spec's ``other``; counted as unparseable).
    """
    tokens = answer.lower().split()
    if not tokens:
        return None
    word = tokens[0].strip(_PUNCT)
    return word if word in ("yes", "no") else None


_ARTICLES = {"a", "an", "the"}


def short_answer_fixed(answer: str) -> str:
    """Normalised short answer for open VQA (GQA), fixed mode.

    Lowercase, drop punctuation and leading articles, collapse whitespace: "A dog." == "dog". Compat mode's exact
    match (after removing trailing dots only) marks "The dog" wrong against "dog".
    """
    text = re.sub(r"[^\w\s]", " ", answer.lower())
    words = text.split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def parse_mmstar_options(question: str) -> list[str]:
    """Option texts of an MMStar question, which embeds ``Options: A: x, B: y, C: z, D: w`` (spec §2.7).

    Returns [] when the pattern is absent. Used only by fixed mode to map an answer given as option text.
    """
    idx = question.rfind("Options:")
    if idx < 0:
        return []
    # The harness's extension follows on a new line; the options end there.
    tail = question[idx + len("Options:") :].split("\n", 1)[0]
    parts = re.split(r"(?:^|,)\s*([A-F]):\s*", tail)
    # re.split with one group: ["", "A", "x", "B", "y", ...]
    letters, texts = parts[1::2], parts[2::2]
    expected = [chr(ord("A") + i) for i in range(len(letters))]
    if letters != expected:
        return []
    return [t.strip() for t in texts]
