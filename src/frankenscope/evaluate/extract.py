"""Answer extraction and rule-based grading, one rule per `Item.answer_type`.

Extraction finds the FINAL answer of a response, the way real chains of thought end: the last
`<answer>` tag, the last `\\boxed{}`, the value after the last answer cue ("Answer:" reads on to the
next non-empty line; "the answer is ..."), and only then a fallback (the last number of the response
for numeric items). When a response has a `</think>` block, only the text after it is searched.

A leading digit followed by `.`, `:` or `-` is never treated as an option label, so "3.5" stays 3.5,
"0.25" stays 0.25 and "1:2" stays "1:2". An answer that is an expression resolves to its result
("3 + 2 = 5" -> 5, "x = 5" -> 5, "3 + 2" -> 5). Numeric comparison uses a tight 1e-6 relative
tolerance, widened to half a unit in the last place when the item states its precision
(`meta["precision"]` = number of decimals, as in MathVista). Gold answers pass through the same
cleaning as predictions (`$...$`, trailing period, `**`). Text answers also match after a light LaTeX
normalisation and by `math-verify`'s equivalence check (a pinned dependency; its version is part of
`grader_identity()`, which every result file records).
"""

from __future__ import annotations

import ast
import math
import operator
import re
import threading
from collections.abc import Callable
from importlib import metadata
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError

Box = tuple[float, float, float, float]

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_LINE = re.compile(r"answer\s*(?:\*\*)?\s*:", re.IGNORECASE)
# "the answer is 18", "the final answer is: 18", "so the answer would be B"
_ANSWER_PHRASE = re.compile(r"\banswer\s+(?:is|would\s+be|should\s+be)\b\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_ARITHMETIC = re.compile(r"[-+\u2212]?[\d.,\s+\-*/×÷^()\u2212]+")
_OPERATOR = re.compile(r"[+\-*/×÷^\u2212]")
_LIST_COMMA = re.compile(r",(?!\d{3}(?!\d))")  # a comma that is not a thousands separator: a list, not a sum
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
# A number: optional sign, digits with optional thousands commas ("1,000"), optional decimals; or ".5".
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|[-+]?\.\d+")
# A plain number without thousands grouping, for comma-separated coordinate lists ("32,101").
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?|[-+]?\.\d+")
_FRACTION = re.compile(r"^\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}$|^([^/]+)/([^/]+)$")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LETTER_RUN = re.compile(r"[A-H]{2,8}")  # "AC"
_LETTER_LIST = re.compile(r"\(?[A-Z]\)?(?:\s*(?:,|;|&|and|\s)\s*\(?[A-Z]\)?)+")  # "A, C", "(A) and (C)"
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


def _after_think(text: str) -> str:
    """The text after the last `</think>` when it is not empty (the answer part of a reasoning trace)."""
    head, sep, tail = text.rpartition("</think>")
    return tail if sep and tail.strip() else text


def _after_cue(text: str) -> str | None:
    """The value after the LAST answer cue, or None when there is none.

    "Answer:" (also "Final answer:", "**Answer:**") reads the rest of its line, or the next non-empty line
    when the rest is empty; "the answer is X" reads X up to the end of its sentence (a period followed by
    white space or the end of the line; "3.5" is kept whole).
    """
    cues = [(m.end(), "line") for m in _ANSWER_LINE.finditer(text)]
    cues += [(m.end(), "phrase") for m in _ANSWER_PHRASE.finditer(text)]
    if not cues:
        return None
    end, kind = max(cues)
    rest = text[end:]
    if kind == "line":
        lines = rest.split("\n")
        first = lines[0].replace("**", "").strip()
        if not first:
            first = next((ln for ln in lines[1:] if ln.replace("**", "").strip()), "")
        return first
    line = rest.split("\n", 1)[0]
    return _SENTENCE_END.split(line, maxsplit=1)[0]


def extract_answer(text: str, answer_type: str | None = None) -> str:
    """The final answer in a response.

    Rule, first that applies (after dropping everything up to the last `</think>` when text follows it):
    the content of the last `<answer>...</answer>` (or of the last `\\boxed{...}` inside it); the content
    of the LAST `\\boxed{...}` (balanced braces, so `\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`); the
    value after the last answer cue (`_after_cue`); else, for `answer_type="number"`, the last number in
    the text, and otherwise its last non-empty line. The result is cleaned: `**` removed, surrounding `$`
    stripped, one trailing period removed, whitespace stripped.
    """
    text = _after_think(text)
    tags = _ANSWER_TAG.findall(text)
    if tags:
        inner = _last_boxed(tags[-1])
        return _clean(tags[-1] if inner is None else inner)
    boxed = _last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    cue = _after_cue(text)
    if cue is not None:
        return _clean(cue)
    if answer_type == "number":
        numbers = _NUMBER.findall(text.replace("\u2212", "-"))
        return numbers[-1] if numbers else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return _clean(lines[-1]) if lines else ""


def resolve_expression(s: str) -> str:
    """An answer that is an expression, replaced by its result: the part after the last `=` ("3 + 2 = 5"
    -> "5", "x = 5" -> "5"), or the value of plain arithmetic on numbers ("3 + 2" -> "5", "2 × 3" -> "6",
    with + - * / × ÷ ^ and parentheses). Anything else is returned unchanged."""
    s = s.strip()
    if "=" in s:
        rhs = s.rsplit("=", 1)[1].strip()
        if rhs:
            s = rhs
    if _ARITHMETIC.fullmatch(s) and _OPERATOR.search(s.lstrip("+-")) and not _LIST_COMMA.search(s):
        value = _eval_arithmetic(s)
        if value is not None:
            return repr(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)
    return s


def _eval_arithmetic(s: str) -> float | None:
    """Value of an expression of numbers with + - * / ^ and parentheses (no names, no calls), or None."""
    expr = s.replace("\u2212", "-").replace("×", "*").replace("÷", "/").replace("^", "**").replace(",", "")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            if isinstance(node.op, ast.Pow) and abs(ev(node.right)) > 64:
                raise ValueError("exponent too large")
            return float(ops[type(node.op)](ev(node.left), ev(node.right)))
        raise ValueError("not arithmetic")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


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


def gold_answer(item: Item) -> str:
    """The item's gold answer cleaned exactly like an extracted prediction (`$...$`, `**`, trailing period)."""
    return _clean(item.answer)


def _grade_number(pred: str, item: Item) -> bool:
    gold = _gold(parse_number(resolve_expression(gold_answer(item))), item)
    p = parse_number(resolve_expression(pred))
    return p is not None and math.isclose(p, gold, rel_tol=REL_TOL, abs_tol=number_tolerance(item))


def _grade_box(pred: str, item: Item) -> bool:
    gold = _gold(parse_box(item.answer), item)
    p = parse_box(pred)
    return p is not None and iou(p, gold) > IOU_THRESHOLD


def _grade_yesno(pred: str, item: Item) -> bool:
    gold = _first_word(gold_answer(item))
    if gold not in ("yes", "no"):
        raise FrankenscopeError(f"item {item.id!r}: yesno answer {item.answer!r} is neither yes nor no")
    return _first_word(pred) == gold


def _letter_set(s: str) -> set[str] | None:
    """The option letters of a multi-letter answer ("A, C", "C and A", "(A)(C)", "AC"), or None when `s` is
    not a list of two or more capital letters."""
    s = s.strip()
    if _LETTER_RUN.fullmatch(s):
        return set(s)
    if not _LETTER_LIST.fullmatch(s):
        return None
    letters = set(re.findall(r"[A-Z]", s))
    return letters if len(letters) >= 2 else None


def _grade_choice(pred: str, item: Item) -> bool:
    """Letter match when the predicted letter is one of the item's choice letters, else option-text match.

    The gold answer may be a letter or the option text. Without `meta["choices"]` a letter is compared
    with a letter gold answer directly. A gold answer of several letters ("A, C") is compared as a set
    with the letters of the prediction (order and separators do not matter).
    """
    options = choice_options(item.meta)
    gold = gold_answer(item)
    gold_letters = _letter_set(gold)
    if gold_letters is not None:
        return _letter_set(pred) == gold_letters
    gold_label = _option_letter(gold)
    if gold_label and (not options or gold_label[0] in options) and not gold_label[1]:
        gold_letter: str | None = gold_label[0]
        gold_text = options.get(gold_letter, gold)
    else:
        gold_text = gold
        gold_letter = next((k for k, v in options.items() if normalize_text(_clean(v)) == normalize_text(gold)),
                           item.meta.get("answer_letter"))
    label = _option_letter(pred)
    if label and (label[0] in options or (not options and gold_letter is not None)):
        return label[0] == gold_letter
    if normalize_text(pred) == normalize_text(gold_text) or (
            pred.strip() and latex_normalize(pred) == latex_normalize(_clean(gold_text))):
        return True
    if options:  # the value of an option counts like its letter: "\\frac{1}{2}" for the option "$\\frac{1}{2}$"
        same = [k for k, v in options.items() if latex_normalize(_clean(v)) == latex_normalize(pred)]
        if len(same) == 1:
            return same[0] == gold_letter
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
    gold = gold_answer(item)
    for cand in dict.fromkeys((pred, resolve_expression(pred) if "=" in pred and "=" not in gold else pred)):
        if normalize_text(cand) == normalize_text(gold):
            return True
        if cand.strip() and latex_normalize(cand) == latex_normalize(gold):
            return True
    return False


def math_verify_equal(pred: str, gold: str) -> bool | None:
    """math-verify's verdict on pred == gold (gold parsed as `$gold$`, pred as `\\boxed{pred}`), or None when
    it cannot parse them (or, defensively, when the package is missing). Its signal-based timeouts only work
    in the main thread; elsewhere they are switched off."""
    try:
        from math_verify import parse, verify  # type: ignore[import-not-found]
    except ImportError:
        return None
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse(f"${gold}$", parsing_timeout=timeout)  # type: ignore[arg-type]
        p = parse(f"\\boxed{{{pred}}}", parsing_timeout=timeout)  # type: ignore[arg-type]
        if not g or not p:
            return None
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception:  # the library raises on odd input and times out on huge expressions
        return None


GRADER_VERSION = 2


def grader_identity() -> dict[str, Any]:
    """What graded the answers, for result files: this module's rule version and math-verify's version."""
    try:
        mv: str | None = metadata.version("math-verify")
    except metadata.PackageNotFoundError:
        mv = None
    return {"grader": "frankenscope.evaluate.extract", "version": GRADER_VERSION, "math_verify": mv}


_GRADERS: dict[str, Callable[[str, Item], bool]] = {
    "number": _grade_number,
    "word": lambda pred, item: normalize_text(pred) == normalize_text(gold_answer(item)),
    "yesno": _grade_yesno,
    "box": _grade_box,
    "choice": _grade_choice,
    "text": _grade_text,
}


def grade(pred_text: str, item: Item) -> bool:
    """Is the answer in a response correct? Extracts it with `extract_answer` (empty -> wrong), then by
    answer_type, comparing with `gold_answer(item)` (the gold cleaned like the prediction):

    - number: the values equal within 1e-6 relative tolerance, or within half a unit in the last place of
      `meta["precision"]` decimals; expressions resolve first (`resolve_expression`); else math-verify;
    - word: equal after lower-casing and collapsing whitespace;
    - text: the same, or equal after `latex_normalize` (also for the right side of "x = ..." when the gold
      has no "="), or equivalent by `math_verify_equal`;
    - yesno: the first word is the gold yes/no (case-insensitive);
    - box: four numbers x1, y1, x2, y2 with IoU > 0.5 against the gold box;
    - choice: the same option letter (only letters among `meta["choices"]` count as letters), else the
      same option text or value (LaTeX-normalised), else a bare number equal to the number of exactly one
      option, the gold one; a multi-letter gold ("A, C") compares as a set of letters.

    An unparseable gold answer or an unknown answer_type raises FrankenscopeError naming the item.
    """
    grader = _GRADERS.get(item.answer_type)
    if grader is None:
        raise FrankenscopeError(
            f"item {item.id!r}: unknown answer_type {item.answer_type!r}; choose one of {sorted(_GRADERS)}")
    pred = extract_answer(pred_text, item.answer_type)
    if not pred.strip():
        return False  # an empty response, or an empty answer after a cue, is never right
    if grader(pred, item):
        return True
    if item.answer_type in ("text", "number"):
        return bool(math_verify_equal(pred, gold_answer(item)))
    return False
