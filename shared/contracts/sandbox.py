"""A Jinja sandbox with a budget: a job's template is user code, run at the edge for every item.

jinja2's sandbox keeps a template away from Python's internals, not from spending time or memory:
nested `range` loops, `'a' * 10**8`, `'x'|center(10**8)` or a macro that calls itself twice all went
through, and `range(10**9)` raised an OverflowError nobody caught. Here every render has a budget:

- work: each loop iteration and each call (function, method, macro, filter) is a step, and a render
  may take `max_steps` of them;
- size: no string or list the template builds (with `*`, `+`, `~`, `%`, `str.format`, a filter or a
  method) may be longer than `max_chars`, checked before it is built wherever its size is known ahead,
  and the output stops as soon as it passes `max_chars`;
- numbers: `*` and `**` may not make an integer of more than `MAX_INT_BITS` bits.

The sandbox is also immutable (no `append` or `extend` to grow a list in place) and has no `lipsum`.
Going over raises `BudgetExceeded`, a jinja2 `SecurityError`. A template that breaks the sandbox or its
budget is the job's fault, not an item's: the job is refused, with `?strict=false` too
(`shared/contracts/prepare.py`, `TemplateRefused`). Only a rendered prompt over `max_chars`
(`OutputTooLong`) fails the item alone, as a long prompt does. The budget is deterministic (steps, not seconds),
so the API and a worker that builds the same job again agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

#: the largest integer a template may make, in bits (a 1234-digit number)
MAX_INT_BITS = 4096


class BudgetExceeded(SecurityError):
    """A template went over its render budget (steps, characters or bits)."""


class OutputTooLong(BudgetExceeded):
    """The rendered prompt passed `max_chars`: the item's data can do that alone (a long essay), so it
    fails the item, like a prompt over the limit."""


@dataclass(slots=True)
class _Budget:
    max_chars: int
    max_steps: int
    steps: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # Jinja folding a constant while compiling: refused, so it runs in a render
        raise BudgetExceeded("no render budget")
    return budget


def _step() -> None:
    budget = _budget()
    budget.steps += 1
    if budget.steps > budget.max_steps:
        raise BudgetExceeded(f"the template went over its budget of {budget.max_steps} steps "
                             "(loop iterations and calls)")


def _fits(size: int, what: str) -> None:
    budget = _budget()
    if size > budget.max_chars:
        raise BudgetExceeded(f"{what} would be {size} long, over the budget of {budget.max_chars}")


def _sized(value: Any, what: str) -> Any:
    if isinstance(value, str | bytes | list | tuple):
        _fits(len(value), what)
    return value


def _bits(n: int) -> None:
    if n > MAX_INT_BITS:
        raise BudgetExceeded(f"a number of about {n} bits is over the budget of {MAX_INT_BITS} bits")


# ## Format strings: widths and precisions are sizes

_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NUMBER = re.compile(r"\d+")


def _check_printf(fmt: str) -> None:
    for m in _PRINTF.finditer(fmt):
        for size in m.groups():
            if size == "*":
                raise BudgetExceeded("'*' widths are not supported in templates")
            if size:
                _fits(int(size), "a '%' width")


def _check_format(fmt: str) -> None:
    for _, _, spec, _ in Formatter().parse(fmt):
        if spec and "{" in spec:
            raise BudgetExceeded("nested '{...}' format specs are not supported in templates")
        for size in _NUMBER.findall(spec or ""):
            _fits(int(size), "a format width")


# ## Methods and filters whose result can be far larger than their input

_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill"}


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes):
        return
    name = getattr(method, "__name__", "")
    if name in _WIDTH_METHODS and args and isinstance(args[0], int):
        _fits(args[0], f"{name}()")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _fits(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(int(size), 0), name)
    elif name == "replace" and len(args) >= 2:
        _fits(_replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1), "replace()")
    elif name == "translate":
        table = args[0] if args else {}
        longest = max((len(v) for v in getattr(table, "values", list)() if isinstance(v, str)), default=1)
        _fits(len(owner) * max(longest, 1), "translate()")


def _replaced_size(s: Any, old: Any, new: Any, count: int | None) -> int:
    s, old, new = (str(x) if not isinstance(x, str | bytes) else x for x in (s, old, new))
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * max(len(new) - len(old), 0)


def _check_filter(name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Check a filter's arguments before it runs; returns `value` (materialized for `join`)."""
    sizes = [a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
    if name in {"center", "indent", "wordwrap", "truncate", "tojson", "batch", "slice"}:
        for size in sizes:
            _fits(size, f"the '{name}' filter's argument")
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else int(width)
        text = str(value)
        _fits(len(text) + (text.count("\n") + 1) * width, "the 'indent' filter's output")
    elif name == "replace" and len(args) >= 2:
        _fits(_replaced_size(value, args[0], args[1], args[2] if len(args) > 2 else kwargs.get("count")),
              "the 'replace' filter's output")
    elif name == "format":
        _check_printf(str(value))
    elif name == "join":
        value = list(value)
        sep = str(args[0] if args else kwargs.get("d", ""))
        _fits(sum(len(v) if isinstance(v, str) else len(str(v)) for v in value) + len(sep) * max(len(value) - 1, 0),
              "the 'join' filter's output")
    return value


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    passes = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        if len(args) > passes:
            value = _check_filter(name, args[passes], args[passes + 1:], kwargs)
            args = (*args[:passes], value, *args[passes + 1:])
        return _sized(func(*args, **kwargs), f"the '{name}' filter's output")

    return bounded


# ## Loops: every iteration is a step


def _metered(iterable: Iterable[Any]) -> Iterator[Any]:
    for value in iterable:
        _step()
        yield value


def _is_metered(node: nodes.Expr) -> bool:
    return (isinstance(node, nodes.Call) and isinstance(node.node, nodes.EnvironmentAttribute)
            and node.node.name == "metered")


class _BoundedCodeGenerator(CodeGenerator):
    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # iterate `environment.metered(<iterable>)`: one step per item
        if not _is_metered(node.iter):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("metered"), [node.iter], [], None, None,
                                   lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _bounded_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise BudgetExceeded(f"range() of {len(numbers)} numbers is over the budget of {MAX_RANGE}")
    return numbers


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every render held to the budget `render` sets."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _bounded_range
        self.globals.pop("lipsum", None)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    metered = staticmethod(_metered)

    @staticmethod
    def concat(parts: tuple[Any, ...]) -> str:
        texts = [str(p) for p in parts]
        _fits(sum(map(len, texts)), "a '~' concatenation")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            if ints:
                _bits(left.bit_length() + right.bit_length())
            elif isinstance(right, int) and hasattr(left, "__len__"):
                _fits(len(left) * max(right, 0), "a '*' repetition")
            elif isinstance(left, int) and hasattr(right, "__len__"):
                _fits(len(right) * max(left, 0), "a '*' repetition")
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            _bits(right * left.bit_length())
        elif operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
            _fits(len(left) + len(right), "a '+' concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left)
        return _sized(super().call_binop(context, operator, left, right), f"a '{operator}'")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        _check_method(__obj, args, kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        @wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt)
            return _sized(wrapped(*args, **kwargs), "str.format()")

        return bounded


def render(template: jinja2.Template, *, max_chars: int, max_steps: int, **context: Any) -> str:
    """Render `template` within a budget; stops as soon as the output passes `max_chars`."""
    token = _BUDGET.set(_Budget(max_chars, max_steps))
    try:
        parts, size = [], 0
        for part in template.generate(**context):
            size += len(part)
            if size > max_chars:
                raise OutputTooLong(f"the rendered template is over the limit of {max_chars} characters")
            parts.append(part)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)
