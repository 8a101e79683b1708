"""Answer extraction and rule-based grading, one rule per `Item.answer_type`.

Fixes the reference code's extraction bugs (reference-method.md §11.1): a leading digit followed by
`.`, `:` or `-` is never treated as an option label, so "3.5" stays 3.5, "0.25" stays 0.25 and
"1:2" stays "1:2". Numeric comparison uses a tight 1e-6 relative tolerance (the reference: 1%),
widened to half a unit in the last place when the item states its precision
(`meta["precision"]` = number of decimals, as in MathVista). Text answers also match after a light
LaTeX normalisation and, when the optional `math-verify` package is installed, by its equivalence
check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError

Box = tuple[float, float, float, float]

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_LINE = re.compile(r"answer\s*:", re.IGNORECASE)
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
# A number: optional sign, digits with optional thousands commas ("1,000"), optional decimals; or ".5".
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|[-+]?\.\d+")
# A plain number without thousands grouping, for comma-separated coordinate lists ("32,101").
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?|[-+]?\.\d+")
_FRACTION = re.compile(r"^\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$|^([^/]+)/([^/]+)$")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# An option label at the start of an answer: "B", "(B)", "B.", "B)", "B:", "B. 145" (capital letter only,
# or a lone lower-case letter); a digit never counts, which is what keeps "3.5" intact.
_OPTION = re.compile(r"^\(?([A-Z])\)?(?:[.):]\s*(.*))?$|^\(?([a-z])\)?$", re.DOTALL)

REL_TOL = 1e-6
IOU_THRESHOLD = 0.5


def _last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` whose braces balance (an unclosed one is ignored)."""
    for m in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def _clean(s: str) -> str:
    """Drop markdown bold `**`, unwrap `\\text{..}`-like macros, strip surrounding `$` and a trailing period."""
    s = _LATEX_TEXT.sub(r"\1", s.replace("**", ""))
    for _ in range(2):  # "$42$." and "$42.$" both give "42"
        s = s.strip().strip("$").strip()
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1]
    return s.strip()


def extract_answer(text: str) -> str:
    """The final answer in a response.

    Rule, first that applies: the content of the last `<answer>...</answer>` (or of the last
    `\\boxed{...}` inside it); the content of the LAST `\\boxed{...}` (balanced braces, so
    `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`); the rest of the line after the last `Answer:`
    (case-insensitive); the whole text. The result is cleaned: `**` removed, surrounding `$` stripped,
    one trailing period removed, whitespace stripped.
    """
    tags = _ANSWER_TAG.findall(text)
    if tags:
        inner = _last_boxed(tags[-1])
        return _clean(tags[-1] if inner is None else inner)
    boxed = _last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    lines = list(_ANSWER_LINE.finditer(text))
    if lines:
        return _clean(text[lines[-1].end():].split("\n", 1)[0])
    return _clean(text)


def normalize_text(s: str) -> str:
    """Lower case with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(s.lower().split())


def parse_number(s: str) -> float | None:
    """The number an answer states, or None.

    An answer that is exactly a fraction (`a/b`, `\\frac{a}{b}`) gives a/b; otherwise the FIRST
    number in the string (sign, thousands commas and decimals kept: "-3.5" -> -3.5, "1,000" -> 1000,
    "50%" -> 50). Unicode minus signs count as "-".
    """
    s = s.replace("\u2212", "-").strip()
    frac = _FRACTION.match(s)
    if frac:
        num, den = (g.strip() for g in (frac.group(1, 2) if frac.group(1) is not None else frac.group(3, 4)))
        if _NUMBER.fullmatch(num) and _NUMBER.fullmatch(den) and float(den.replace(",", "")) != 0:
            return float(num.replace(",", "")) / float(den.replace(",", ""))
    m = _NUMBER.search(s)
    return float(m.group().replace(",", "")) if m else None


def parse_box(s: str) -> Box | None:
    """The first four numbers in `s` as a box (x1, y1, x2, y2), or None when there are fewer than four.

    Commas always separate numbers here ("8,77,32,101" is four numbers, never 32,101 = 32101).
    """
    nums = [float(m.group()) for m in _PLAIN_NUMBER.finditer(s.replace("\u2212", "-"))]
    if len(nums) < 4:
        return None
    return (nums[0], nums[1], nums[2], nums[3])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2); corners may come in either order.

    IoU = area(a ∩ b) / (area(a) + area(b) - area(a ∩ b)); two identical zero-area boxes give 1.0,
    any other zero union gives 0.0.
    """
    ax1, ax2 = sorted((a[0], a[2]))
    ay1, ay2 = sorted((a[1], a[3]))
    bx1, bx2 = sorted((b[0], b[2]))
    by1, by2 = sorted((b[1], b[3]))
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    if union <= 0:
        return 1.0 if (ax1, ay1, ax2, ay2) == (bx1, by1, bx2, by2) else 0.0
    return inter / union


def choice_options(meta: dict[str, Any]) -> dict[str, str]:
    """Letter -> option text from `meta["choices"]`: a list (letters A, B, ... by position) or a dict."""
    choices = meta.get("choices") or {}
    if isinstance(choices, dict):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    return {_LETTERS[i]: str(v) for i, v in enumerate(choices)}


def _option_letter(s: str) -> tuple[str, str] | None:
    """(letter, rest) when `s` starts with an option label such as "B", "(B)", "B." or "B) text"."""
    m = _OPTION.match(s.strip())
    if not m:
        return None
    if m.group(3):
        return m.group(3).upper(), ""
    return m.group(1), (m.group(2) or "").strip()


def _first_word(s: str) -> str:
    words = re.findall(r"[a-z]+", s.lower())
    return words[0] if words else ""


def number_tolerance(item: Item) -> float:
    """Absolute tolerance implied by `item.meta["precision"]` (decimal places): half a unit in the last
    place, so an answer that rounds to the gold value counts; 1e-12 when the item states no precision."""
    prec = item.meta.get("precision")
    if prec is None or isinstance(prec, bool):
        return 1e-12
    try:
        places = int(float(prec))
    except (TypeError, ValueError):
        return 1e-12
    return 0.5 * 10.0 ** (-places) * (1 + 1e-9)


def _grade_number(pred: str, item: Item) -> bool:
    gold = _gold(parse_number(item.answer), item)
    p = parse_number(pred)
    return p is not None and math.isclose(p, gold, rel_tol=REL_TOL, abs_tol=number_tolerance(item))


def _grade_box(pred: str, item: Item) -> bool:
    gold = _gold(parse_box(item.answer), item)
    p = parse_box(pred)
    return p is not None and iou(p, gold) > IOU_THRESHOLD


def _grade_yesno(pred: str, item: Item) -> bool:
    gold = _first_word(item.answer)
    if gold not in ("yes", "no"):
        raise FrankenscopeError(f"item {item.id!r}: yesno answer {item.answer!r} is neither yes nor no")
    return _first_word(pred) == gold


def _grade_choice(pred: str, item: Item) -> bool:
    """Letter match when the predicted letter is one of the item's choice letters, else option-text match.

    The gold answer may be a letter or the option text. Without `meta["choices"]` a letter is compared
    with a letter gold answer directly.
    """
    options = choice_options(item.meta)
    gold = item.answer.strip()
    gold_label = _option_letter(gold)
    if gold_label and (not options or gold_label[0] in options) and not gold_label[1]:
        gold_letter: str | None = gold_label[0]
        gold_text = options.get(gold_letter, gold)
    else:
        gold_text = gold
        gold_letter = next((k for k, v in options.items() if normalize_text(v) == normalize_text(gold)), None)
    label = _option_letter(pred)
    if label and (label[0] in options or (not options and gold_letter is not None)):
        return label[0] == gold_letter
    if normalize_text(pred) == normalize_text(gold_text):
        return True
    # "145" for the option "145°": accept a number only when exactly one option states that number.
    p = parse_number(pred)
    if p is None or not options or not _NUMBER.fullmatch(pred.strip().replace("\u2212", "-")):
        return False
    hits = [k for k, v in options.items() if (q := parse_number(v)) is not None and math.isclose(p, q, rel_tol=REL_TOL)]
    return len(hits) == 1 and hits[0] == gold_letter


def _gold(value: Any, item: Item) -> Any:
    if value is None:
        raise FrankenscopeError(
            f"item {item.id!r}: gold answer {item.answer!r} cannot be parsed as answer_type {item.answer_type!r}")
    return value


_LATEX_DROP = re.compile(r"\\(?:left|right|displaystyle)(?![a-zA-Z])|\\[,!;: ]|\s+")


def latex_normalize(s: str) -> str:
    """A comparison key for math answers: `\\dfrac`/`\\tfrac` -> `\\frac`, `\\left`/`\\right`, thin spaces
    and all whitespace removed, `^\\circ` and `°` dropped, lower case."""
    s = _LATEX_TEXT.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\u00b0", "")
    return _LATEX_DROP.sub("", s).lower()


def _grade_text(pred: str, item: Item) -> bool:
    if normalize_text(pred) == normalize_text(item.answer):
        return True
    return bool(pred.strip()) and latex_normalize(pred) == latex_normalize(item.answer)


def math_verify_equal(pred: str, gold: str) -> bool | None:
    """math-verify's verdict on pred == gold (gold parsed as `$gold$`, pred as `\\boxed{pred}`), or None when
    the optional `math-verify` package is not installed or cannot parse them."""
    try:
        from math_verify import parse, verify  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        g, p = parse(f"${gold}$"), parse(f"\\boxed{{{pred}}}")
        if not g or not p:
            return None
        return bool(verify(g, p))
    except Exception:  # the library raises on odd input and times out on huge expressions
        return None


_GRADERS: dict[str, Callable[[str, Item], bool]] = {
    "number": _grade_number,
    "word": lambda pred, item: normalize_text(pred) == normalize_text(item.answer),
    "yesno": _grade_yesno,
    "box": _grade_box,
    "choice": _grade_choice,
    "text": _grade_text,
}


def grade(pred_text: str, item: Item) -> bool:
    """Is the answer in a response correct? Extracts it with `extract_answer`, then by answer_type:

    - number: `parse_number` of both equal within 1e-6 relative tolerance, or within half a unit in the
      last place of `meta["precision"]` decimals;
    - word: equal after lower-casing and collapsing whitespace;
    - text: the same, or equal after `latex_normalize`, or (when math-verify is installed) equivalent by
      `math_verify_equal`;
    - yesno: the first word is the gold yes/no (case-insensitive);
    - box: four numbers x1, y1, x2, y2 with IoU > 0.5 against the gold box;
    - choice: the same option letter (only letters among `meta["choices"]` count as letters), else the
      same option text, else a bare number equal to the number of exactly one option, the gold one.

    An unparseable gold answer or an unknown answer_type raises FrankenscopeError naming the item.
    """
    grader = _GRADERS.get(item.answer_type)
    if grader is None:
        raise FrankenscopeError(
            f"item {item.id!r}: unknown answer_type {item.answer_type!r}; choose one of {sorted(_GRADERS)}")
    pred = extract_answer(pred_text)
    if grader(pred, item):
        return True
    if item.answer_type == "text" and pred:
        return bool(math_verify_equal(pred, item.answer))
    return False
