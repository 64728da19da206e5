"""A calculator and date arithmetic, for the model (which is bad at both).

`calculate` walks the expression's syntax tree and allows only numbers, + - * / // % **
(also ^), parentheses, unary minus, a few functions and pi / e: nothing else is evaluated,
so there are no names, attributes or imports to abuse; powers whose result would pass
10,000 digits are refused before they are computed. `date_math` answers "days until 25
December", "date 3 weeks after 2026-12-01", "days between X and Y", "weekday of X".
"""

from __future__ import annotations

import ast
import math
import operator
import re
from datetime import date, datetime
from typing import Annotated

from dateutil.relativedelta import relativedelta

from anima.errors import BadInput
from anima.timeparse import find_times
from anima.tools import Arg, Tool, ToolContext, tool

FUNCTIONS = {
    "sqrt": math.sqrt,
    "log": math.log,
    "ln": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "round": round,
    "abs": abs,
    "min": min,
    "max": max,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
MAX_DIGITS = 10_000
_ALLOWED = "use numbers, + - * / // % ** ( ), sqrt log sin cos round abs min max, pi, e"


def _check_power(base, exponent) -> None:
    if abs(base) > 1 and abs(exponent) * math.log10(abs(base)) > MAX_DIGITS:
        raise BadInput("that power is too large to compute", f"results are limited to {MAX_DIGITS:,} digits")


def _eval(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        value = OPERATORS[type(node.op)](left, right)
        if isinstance(value, complex):
            raise BadInput(f"'{ast.unparse(node)}' has no real result", "a negative number to a fractional power")
        if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.33:
            raise BadInput("the result is too large", f"results are limited to {MAX_DIGITS:,} digits")
        return value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in FUNCTIONS
        and not node.keywords
    ):
        return FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise BadInput(f"'{ast.unparse(node)}' is not allowed in a calculation", _ALLOWED)


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression; BadInput for anything else."""
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise BadInput("nothing to calculate", "give an expression such as (3 + 4) * 2")
    if len(text) > 500:
        raise BadInput("the expression is too long", "at most 500 characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise BadInput(f"cannot read '{expression}' as arithmetic", _ALLOWED) from exc
    try:
        value = _eval(tree.body)
    except ZeroDivisionError as exc:
        raise BadInput(f"division by zero in '{expression}'", "check the divisor") from exc
    except OverflowError as exc:
        raise BadInput(f"'{expression}' is too large to compute", "use smaller numbers") from exc
    except (ValueError, TypeError) as exc:  # sqrt(-1), log(0), min() ...
        raise BadInput(f"cannot compute '{expression}': {exc}", _ALLOWED) from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"'{expression}' is too large to compute", "use smaller numbers")
    return value


def show_number(value: int | float) -> str:
    """12 significant digits, no float noise: 0.1 + 0.2 -> 0.3, 6 / 3 -> 2."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}" if isinstance(value, float) else str(value)


# --- dates ---------------------------------------------------------------------------------------

_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())} | {
    "a": 1,
    "an": 1,
}
_N = r"(?P<n>\d+|" + "|".join(_WORDS) + r")"
_UNTIL = re.compile(
    r"(?:how many\s+)?(?P<unit>days|weeks)\s+(?:are\s+there\s+|is\s+it\s+|left\s+)?"
    r"(?:until|till|to|before)\s+(?P<x>.+)",
    re.I,
)
_SINCE = re.compile(r"(?:how many\s+)?days\s+(?:have\s+passed\s+|has\s+it\s+been\s+)?(?:since|after)\s+(?P<x>.+)", re.I)
_BETWEEN = re.compile(
    r"(?:how many\s+)?days\s+(?:are\s+there\s+)?(?:between|from)\s+(?P<x>.+?)\s+(?:and|to|until)\s+(?P<y>.+)", re.I
)
_SHIFT = re.compile(
    rf"(?:what(?:'s|\s+is)\s+)?(?:the\s+)?(?:date\s+)?{_N}\s+(?P<unit>day|week|month|year)s?\s+(?P<dir>after|from|before|since)\s+(?P<x>.+)",
    re.I,
)
_WEEKDAY = re.compile(
    r"(?:what\s+)?(?:week)?day\s+(?:of\s+the\s+week\s+)?(?:is|was|will\s+be|of|for)\s+(?P<x>.+)", re.I
)
_MONTH_NAME = re.compile(r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b", re.I)


def _day(phrase: str, now: datetime, future: bool = False) -> date:
    """The day a phrase names; with `future`, a month and day without a year is the next one."""
    phrase = phrase.strip().rstrip("?.! ")
    if phrase.lower() in ("today", "now", "today's date"):
        return now.date()
    spans = find_times(phrase, now) or find_times("on " + phrase, now)  # "1 May" alone is not a date to timeparse
    if not spans:
        raise BadInput(f"cannot read a date in '{phrase}'", "try '25 December', 'next Friday' or 2026-12-25")
    day = spans[0].start.date()
    if future and day < now.date() and _MONTH_NAME.search(phrase) and not re.search(r"\b\d{4}\b", phrase):
        day += relativedelta(years=1)
    return day


def _show(d: date) -> str:
    return f"{d:%A} {d.day} {d:%B %Y} ({d.isoformat()})"


def _days(n: int) -> str:
    return f"{n} day{'s' * (n != 1)}"


def date_math(question: str, now: datetime) -> str:
    """An answer in words to a question about days and dates, relative to `now`."""
    q = " ".join(question.strip().rstrip("?").split())
    now = now.astimezone().replace(tzinfo=None) if now.tzinfo else now
    today = now.date()
    if m := _BETWEEN.fullmatch(q):
        a, b = _day(m["x"], now), _day(m["y"], now)
        return f"{_days(abs((b - a).days))} between {_show(a)} and {_show(b)}"
    if m := _UNTIL.fullmatch(q):
        d = _day(m["x"], now, future=True)
        n = (d - today).days
        weeks = f" ({n // 7} weeks and {_days(n % 7)})" if m["unit"].lower() == "weeks" and n >= 0 else ""
        return (
            f"{_show(d)} is today"
            if n == 0
            else f"{_days(n)}{weeks} until {_show(d)}"
            if n > 0
            else f"{_show(d)} was {_days(-n)} ago"
        )
    if m := _SINCE.fullmatch(q):
        d = _day(m["x"], now)
        n = (today - d).days
        return f"{_days(n)} since {_show(d)}" if n >= 0 else f"{_show(d)} is {_days(-n)} from now"
    if m := _SHIFT.fullmatch(q):
        n = int(m["n"]) if m["n"].isdigit() else _WORDS[m["n"].lower()]
        base = _day(m["x"], now)
        sign = -1 if m["dir"].lower() == "before" else 1
        d = base + relativedelta(**{m["unit"].lower() + "s": sign * n})
        return f"{n} {m['unit'].lower()}{'s' * (n != 1)} {m['dir'].lower()} {_show(base)} is {_show(d)}"
    if m := _WEEKDAY.fullmatch(q):
        d = _day(m["x"], now)
        return f"{d.day} {d:%B %Y} is a {d:%A}"
    if find_times(q, now):
        return f"{_show(_day(q, now))}"
    raise BadInput(
        f"cannot answer '{question}'",
        "ask e.g. 'days until 25 December', 'date 3 weeks after 2026-12-01', 'weekday of 2026-12-25'",
    )


# --- for the model ---------------------------------------------------------------------------


def tools(ctx: ToolContext) -> list[Tool]:
    def calculator(expression: Annotated[str, Arg("e.g. (1200 * 1.05) / 12")]) -> str:
        """Exact arithmetic: + - * / ** ( ), sqrt, log, sin, cos, round, abs, min, max, pi, e."""
        return f"{expression} = {show_number(calculate(expression))}"

    def dates(question: Annotated[str, Arg("e.g. 'days until 25 December', 'date 3 weeks after 2026-12-01'")]) -> str:
        """Date arithmetic: days until a date, days between two dates, a date N days/weeks/months
        after another, the weekday of a date."""
        return date_math(question, ctx.now())

    return [
        tool(
            calculator,
            triggers=r"\d\s*[-+*/^x×÷%]\s*\d|\bcalculat|\bhow much is\b|\bpercent\b|"
            r"\d\s*%\s*of\b|\bsqrt\b|\bsquare root\b",
        ),
        tool(
            dates,
            name="date_math",
            triggers=r"\bdays? (?:until|till|since|between|after|before)\b|\bweeks? (?:until|after|before)\b|"
            r"\bweekday\b|\bwhat day\b",
        ),
    ]
