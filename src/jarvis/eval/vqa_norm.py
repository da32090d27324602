"""TextVQA's answer normalisation and soft accuracy, as the reference's ``cambrian/eval/eval/textvqa/
m4c_evaluator.py`` (``EvalAIAnswerProcessor`` lines 7-218, ``TextVQAAccuracyEvaluator`` lines 221-257; the
MMF/EvalAI port of the official VQA evaluation).

Two quirks of that code are kept in compat mode and corrected in fixed mode:
- The period rule is written ``(?!<=\\d)(\\.)(?!\\d)`` (a look-ahead typo for a look-behind), so it removes every
  period not followed by a digit; and ``re.UNICODE`` is passed as ``sub``'s *count*, so at most 32 are removed.
  Fixed mode keeps the rule (it is what published TextVQA numbers use) and drops the count limit.
- The contraction table maps ``somebody'd`` to ``somebodyd``; fixed mode maps it to itself.
"""

from __future__ import annotations

import re

# The VQA contraction table (m4c_evaluator.py:14-135): "undotted" -> "dotted". Keys with capitals never match
# (the text is lowercased first); they are kept so the table is the reference's.
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd
howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've
oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't
shed've=she'd've she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've
shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've
somebodyll=somebody'll somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's somethingd=something'd
somethingd've=something'd've something'dve=something'd've somethingll=something'll thats=that's
thered=there'd thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas wasnt=wasn't
wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're whats=what's
whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't
wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split("=", 1) for pair in _CONTRACTION_PAIRS.split())
_FIXED_CONTRACTIONS = {**CONTRACTIONS, "somebody'd": "somebody'd"}

NUMBERS = {
    w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
} | {"none": "0"}
ARTICLES = ("a", "an", "the")
PUNCTUATIONS = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_PERIOD = re.compile(r"\.(?!\d)")  # what the reference's pattern matches (see the module docstring)
_DIGIT_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")
_COMPAT_PERIOD_COUNT = int(re.UNICODE)  # 32: the flag the reference passes as ``count``


def normalize_answer(text: str, mode: str = "compat") -> str:
    """One answer through the EvalAI processor (m4c_evaluator.py:181-218)."""
    # word_tokenize (lines 181-184): lowercase, drop "," and "?", split off "'s".
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    # process_punctuation (lines 186-196): the test is made on the text before any replacement.
    out = text
    for p in PUNCTUATIONS:
        spaced = (p + " ") in text or (" " + p) in text or _DIGIT_COMMA.search(text) is not None
        out = out.replace(p, "" if spaced else " ")
    out = _PERIOD.sub("", out, count=_COMPAT_PERIOD_COUNT if mode == "compat" else 0)
    # process_digit_article (lines 198-211): number words to digits, drop articles, then contractions.
    table = CONTRACTIONS if mode == "compat" else _FIXED_CONTRACTIONS
    words = [NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(table.get(w, w) for w in words if w not in ARTICLES)


def soft_score(prediction: str, references: list[str], mode: str = "compat") -> float:
    """VQA soft accuracy of one prediction against the ten human answers (m4c_evaluator.py:225-254).

    Each reference position is left out in turn; the prediction scores min(1, matches among the other nine / 3),
    averaged over the ten. The reference asserts exactly ten answers; here that is a ValueError.
    """
    if len(references) != 10:
        raise ValueError(f"textvqa: {len(references)} reference answers; the VQA soft score needs exactly 10")
    refs = [normalize_answer(r, mode) for r in references]
    pred = normalize_answer(prediction, mode)
    if pred not in refs:
        return 0.0
    hits = refs.count(pred)
    # Leaving out a matching position leaves hits - 1 matches, any other position leaves hits.
    accs = [min(1.0, float(hits - (r == pred)) / 3) for r in refs]
    return sum(accs) / len(accs)
