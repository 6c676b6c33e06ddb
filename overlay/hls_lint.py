"""``zskip hls-lint``: the hardware rules of DESIGN.md checked on the HLS sources.

Reads the synthesised sources under ``hls/`` (every ``*.h`` and ``*.cpp``
except testbenches ``*_tb.cpp``, their data ``*_tb_data.h``, testbench
helpers ``tb_*.h`` and the g++ bridge in ``hls/emu/``) and the schedule
table ``hls/common/schedule.h`` (one ``ZSKIP_SCHEDULE(LABEL, II, DEPTH)``
line per pipelined loop), and reports ``file:line: rule: message``.

Rules (names as printed):

``pipeline-label``
    a loop with ``#pragma HLS PIPELINE`` (not ``off``) has a label, the label
    has an entry in the schedule table, and no two pipelined loops share a label.
``schedule-entry``
    every table entry names a pipelined loop of the sources; its II and DEPTH
    are integer literals or constants defined in schedule.h.
``pipeline-ii``
    the II a loop's PIPELINE pragma requests (1 when it names none, as in
    Vitis HLS) equals its table entry's II, when both resolve to numbers: the
    code states the II the counters assume.
``unroll-bound``
    a fully unrolled loop (``UNROLL`` without ``factor=``) has constant bounds.
``loop-bound``
    every loop has constant bounds or a ``LOOP_TRIPCOUNT`` with a named ``max``.
``lane-partition``
    inside a fully unrolled loop, an array subscript that depends on the loop
    variable or on a scalar the body writes (each unrolled copy has its own
    value of both) is a lane's port: that dimension of the array is partitioned (``ARRAY_PARTITION`` or
    ``ARRAY_RESHAPE`` with that ``dim``, or ``dim=0``) where the array is
    declared: in the same function for a local array or parameter, or for a
    struct member (accessed as ``x.m`` / ``x->m``) in the struct body or
    through ``variable=x.m`` anywhere.
``static-constructor``
    no ``static`` object in synthesised code has a type with a constructor
    (a struct that declares one or holds a member that has one, or any type
    the lint cannot show to be plain: ``std::``, ``hls::stream``, ...).
``synthesis-guard``
    code that only C simulation compiles (``#ifndef __SYNTHESIS__``,
    ``#if !defined(__SYNTHESIS__) ...``, the ``#else`` of
    ``#ifdef __SYNTHESIS__``) holds only tracing (``printf``, ``std::cerr``,
    ...) and assertions (``assert``, ``*ASSERT*`` / ``*TRACE*`` macros and
    ``if`` statements around them), or is a speed path declared proven by a
    comment on, just above or just below the directive::

        // csim-path: proven by tests/test_x.py::test_y

    naming a test function that exists (the test must show the C-simulation
    path equal to the synthesis form, results and counters).

The parser is C++-aware but simple, and these are its limits:

- comments and string literals are understood; the preprocessor is not run:
  ``#if`` branches are evaluated only for ``__SYNTHESIS__`` (defined, as in
  csynth); conditions on other macros keep every branch; macros are not
  expanded (a loop or pragma produced by a macro is invisible);
- a loop is ``for``, ``while`` or ``do``; a pragma belongs to the innermost
  loop whose body holds it; a label is the identifier and colon just before
  the loop keyword;
- a constant bound is ``for (v = A; v OP B; v += C)`` (OP one of
  ``< <= > >= !=``, the step ``++``/``--``/``+=``/``-=``) with A, B, C made of
  literals, ``static const``/``constexpr``/enum/``#define`` names of the
  sources, non-type template parameters of the enclosing templates and
  ``X::name`` members (``CFG::pe_lanes``, ``set_words<CFG>::value``); these
  names are collected over all the sources, not per scope;
  ``while`` and ``do`` loops never have constant bounds;
- lane indices are the loop variable and the scalars the unrolled body writes
  (not values reached through function calls or pointers); partitions are matched by
  array name and dim, not by factor, and an array reached through a pointer
  parameter must be partitioned under the parameter's name in that function;
- types are resolved through ``typedef``/``using``/object-like ``#define``
  and member typedefs of the sources' structs; ``ap_*`` types count as plain.
"""
from __future__ import annotations

import argparse
import bisect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

__all__ = ["Violation", "lint", "read_schedule", "synthesised_sources", "main", "RULES"]

RULES = ("pipeline-label", "schedule-entry", "pipeline-ii", "unroll-bound", "loop-bound", "lane-partition",
         "static-constructor", "synthesis-guard")

SCHEDULE_HEADER = Path("common") / "schedule.h"
CSIM_PATH_MARKER = re.compile(r"csim-path:\s*proven\s+by\s+(\S+?\.py)((?:::\w+)+)")


@dataclass(frozen=True, order=True)
class Violation:
    """One broken rule at ``path:line``."""

    path: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


# --------------------------------------------------------------------------- text
class Source:
    """One file: comment-free text (offsets and lines kept), its comments by line, the synthesis view."""

    def __init__(self, path: Path, display: str, text: Optional[str] = None):
        self.path = path
        self.display = display
        self.raw = path.read_text() if text is None else text
        self.code, self.comments = _strip_comments(self.raw)
        self._starts = [0] + [m.end() for m in re.finditer(r"\n", self.code)]
        self.lines = self.code.split("\n")
        #: the groups of #if directives, and the synthesis view (dead branches blanked)
        self.groups = _conditional_groups(self)
        self.synth = _synthesis_view(self)

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self._starts, offset)

    def offset_of_line(self, line: int) -> int:
        return self._starts[line - 1]


def _strip_comments(text: str) -> Tuple[str, Dict[int, str]]:
    """Comments replaced by spaces (newlines kept); the comments' text per line (1-based)."""
    out, comments = [], {}
    i, n, line = 0, len(text), 1

    def note(at_line, s):
        comments[at_line] = comments.get(at_line, "") + s

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            note(line, text[i:j])
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k, part in enumerate(text[i:j].split("\n")):
                note(line + k, part)
            out.append("".join("\n" if ch == "\n" else " " for ch in text[i:j]))
            line += text.count("\n", i, j)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            if c == "\n":
                line += 1
            out.append(c)
            i += 1
    return "".join(out), comments


def _match(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index just past the bracket closing the one at ``text[i]`` (len(text) if unbalanced)."""
    depth = 0
    for j in range(i, len(text)):
        ch = text[j]
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


# ------------------------------------------------------------- #if and __SYNTHESIS__
_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b(.*)$", re.MULTILINE)


def _tri_eval(expr: str, synthesis: bool) -> Optional[bool]:
    """``#if`` expression with ``__SYNTHESIS__`` known and every other macro unknown (None)."""
    expr = re.sub(r"\bdefined\s*\(\s*(\w+)\s*\)|\bdefined\s+(\w+)",
                  lambda m: f" D_{m.group(1) or m.group(2)} ", expr)
    tokens = re.findall(r"&&|\|\||!|\(|\)|[^\s()!&|]+", expr)
    pos = 0

    def atom(tok):
        if tok == "D___SYNTHESIS__" or tok == "__SYNTHESIS__":
            return synthesis
        if tok.isdigit():
            return int(tok) != 0
        return None

    def parse_or():
        nonlocal pos
        value = parse_and()
        while pos < len(tokens) and tokens[pos] == "||":
            pos += 1
            rhs = parse_and()
            value = True if value is True or rhs is True else (None if value is None or rhs is None else False)
        return value

    def parse_and():
        nonlocal pos
        value = parse_not()
        while pos < len(tokens) and tokens[pos] == "&&":
            pos += 1
            rhs = parse_not()
            value = False if value is False or rhs is False else (None if value is None or rhs is None else True)
        return value

    def parse_not():
        nonlocal pos
        if pos < len(tokens) and tokens[pos] == "!":
            pos += 1
            value = parse_not()
            return None if value is None else not value
        return parse_atom()

    def parse_atom():
        nonlocal pos
        if pos >= len(tokens):
            return None
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = parse_or()
            if pos < len(tokens) and tokens[pos] == ")":
                pos += 1
            return value
        # a comparison or arithmetic on unknown macros: skip to the next operator
        value = atom(tok)
        while pos < len(tokens) and tokens[pos] not in ("&&", "||", ")"):
            pos += 1
            value = None
        return value

    try:
        result = parse_or()
    except RecursionError:
        return None
    return result if pos >= len(tokens) else None


@dataclass
class _Branch:
    kind: str            # if / elif / else
    line: int            # directive line
    end_line: int        # line of the next directive of the group
    live_synth: Optional[bool]
    live_csim: Optional[bool]
    depth: int


def _conditional_groups(src: Source) -> List[_Branch]:
    """Every branch of every #if group, with whether it is compiled in synthesis / C simulation."""
    branches: List[_Branch] = []
    stack: List[dict] = []
    for m in _DIRECTIVE.finditer(src.code):
        kind, rest = m.group(1), m.group(2).strip()
        line = src.line_of(m.start())
        if kind in ("if", "ifdef", "ifndef"):
            cond = {"if": rest, "ifdef": f"defined({rest})", "ifndef": f"!defined({rest})"}[kind]
            group = {"taken": {True: False, False: False}, "open": None}
            stack.append(group)
            _open_branch(branches, group, "if", cond, line, len(stack) - 1)
        elif kind in ("elif", "else") and stack:
            group = stack[-1]
            branches[group["open"]].end_line = line
            _open_branch(branches, group, kind, rest if kind == "elif" else "1", line, len(stack) - 1)
        elif kind == "endif" and stack:
            group = stack.pop()
            branches[group["open"]].end_line = line
    return branches


def _tri_and(a: Optional[bool], b: Optional[bool]) -> Optional[bool]:
    return False if a is False or b is False else (True if a is True and b is True else None)


def _tri_or(a: Optional[bool], b: Optional[bool]) -> Optional[bool]:
    return True if a is True or b is True else (False if a is False and b is False else None)


def _open_branch(branches, group, kind, cond, line, depth) -> None:
    """A branch is compiled when its condition holds and no earlier branch of the group was taken."""
    live = {}
    for synthesis in (True, False):
        value = _tri_eval(cond, synthesis)
        earlier = group["taken"][synthesis]
        live[synthesis] = _tri_and(None if earlier is None else not earlier, value)
        group["taken"][synthesis] = _tri_or(earlier, value)
    group["open"] = len(branches)
    branches.append(_Branch(kind, line, line, live[True], live[False], depth))


def _synthesis_view(src: Source) -> str:
    """The code with every branch that synthesis does not compile blanked, directive lines too.

    Blanked lines keep their length, so offsets into the view are offsets into the file.
    """
    lines = list(src.lines)

    def blank(k):
        lines[k] = " " * len(lines[k])

    for b in src.groups:
        blank(b.line - 1)
        if b.live_synth is False:
            for k in range(b.line, b.end_line - 1):
                blank(k)
    for m in _DIRECTIVE.finditer(src.code):
        blank(src.line_of(m.start()) - 1)
    return "\n".join(lines)


# --------------------------------------------------------------------------- blocks
@dataclass
class _Block:
    open: int
    close: int
    header: str
    kind: str  # namespace / type / function / other


def _blocks(text: str) -> List[_Block]:
    """Every ``{...}`` of ``text`` with the text before it (since the previous ; { or })."""
    blocks, stack = [], []
    last_stop = 0
    for i, ch in enumerate(text):
        if ch == "{":
            header = text[last_stop:i]
            stack.append((i, header))
            last_stop = i + 1
        elif ch == "}":
            if stack:
                start, header = stack.pop()
                blocks.append(_Block(start, i + 1, header, _block_kind(header)))
            last_stop = i + 1
        elif ch == ";":
            last_stop = i + 1
    blocks.sort(key=lambda b: b.open)
    return blocks


def _block_kind(header: str) -> str:
    h = re.sub(r"#[^\n]*", " ", header).strip()
    if re.search(r"\bnamespace\b", h) or re.match(r'extern\s+"C"', h):
        return "namespace"
    if re.search(r"\b(struct|class|union|enum)\b[^()]*$", h):
        return "type"
    if re.search(r"\b(if|for|while|switch|else|do)\b\s*(\(|$)", h) or h in ("", "else", "do") or h.endswith("="):
        return "other"
    if re.search(r"\)\s*(const)?\s*(noexcept)?\s*(:[^;]*)?$", h, re.DOTALL):
        return "function"
    return "other"


def _enclosing(blocks: List[_Block], pos: int) -> List[_Block]:
    """Blocks containing ``pos``, outermost first."""
    return [b for b in blocks if b.open < pos < b.close]


_TEMPLATE = re.compile(r"\btemplate\s*<")


def _template_params(header: str) -> Tuple[Set[str], Set[str]]:
    """(type parameters, non-type parameters) of the template header(s) in a block header."""
    types, values = set(), set()
    for m in _TEMPLATE.finditer(header):
        start = m.end() - 1
        end = _match(header.replace("(", " ").replace(")", " "), start, "<", ">")
        inner = header[start + 1:end - 1]
        for param in _split_top(inner, ","):
            param = param.split("=")[0].strip()
            words = re.findall(r"[A-Za-z_]\w*", param)
            if not words:
                continue
            if words[0] in ("class", "typename") or words[0] == "template":
                types.add(words[-1])
            else:
                values.add(words[-1])
    return types, values


def _split_top(text: str, sep: str, angles: bool = True) -> List[str]:
    """``text`` split at ``sep`` outside brackets (``<>`` too when ``angles``: template lists)."""
    opens, closes = ("(<[{", ")>]}") if angles else ("([{", ")]}")
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in opens:
            depth += 1
        elif ch in closes:
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


# --------------------------------------------------------------------------- loops
@dataclass
class Loop:
    src: Source
    keyword: str
    start: int            # offset of the keyword
    header: str           # for: the text inside the parentheses
    body: Tuple[int, int]
    label: Optional[str]
    pragmas: List[Tuple[int, str]] = field(default_factory=list)  # (offset, text after "#pragma HLS")

    @property
    def line(self) -> int:
        return self.src.line_of(self.start)

    def pragma(self, name: str) -> List[Tuple[int, Dict[str, str]]]:
        """(offset, options) of this loop's own ``#pragma HLS <name>`` lines."""
        return [(at, _pragma_options(text)) for at, text in self.pragmas if text.split()[0].upper() == name]

    def describe(self) -> str:
        return f"loop {self.label}" if self.label else f"unlabelled {self.keyword} loop"


_PRAGMA = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+HLS[ \t]+(.*)$", re.MULTILINE | re.IGNORECASE)


def _pragma_options(text: str) -> Dict[str, str]:
    """``PIPELINE II=1`` -> {"": "PIPELINE", "ii": "1"}; bare words map to "" (e.g. ``off``, ``complete``)."""
    text = re.sub(r"\s*=\s*", "=", text.strip())
    head, _, rest = text.partition(" ")
    options = {"": head.upper()}
    keys = list(re.finditer(r"([A-Za-z_]\w*)=", rest))
    if keys:
        for word in rest[:keys[0].start()].split():
            options[word.lower()] = ""
    else:
        for word in rest.split():
            options[word.lower()] = ""
    for k, m in enumerate(keys):
        end = keys[k + 1].start() if k + 1 < len(keys) else len(rest)
        key, value = m.group(1).lower(), rest[m.end():end].strip()
        if key not in _EXPRESSION_OPTIONS:
            # one word; words after it are bare options (``variable=buf complete``)
            value, *bare = value.split() or [""]
            for word in bare:
                options[word.lower()] = ""
        options[key] = value
    return options


#: pragma options whose value may be an expression with spaces (LOOP_TRIPCOUNT max = A / B)
_EXPRESSION_OPTIONS = ("max", "min", "avg")


def _statement_end(text: str, i: int) -> int:
    """Index just past the statement starting at or after ``i``."""
    n = len(text)
    while i < n and text[i].isspace():
        i += 1
    if i >= n:
        return n
    if text[i] == "{":
        return _match(text, i, "{", "}")
    m = re.match(r"(for|while|if|switch)\b\s*\(", text[i:])
    if m:
        j = _match(text, i + m.end() - 1, "(", ")")
        end = _statement_end(text, j)
        if m.group(1) == "if":
            e = re.match(r"\s*else\b", text[end:])
            if e:
                end = _statement_end(text, end + e.end())
        return end
    m = re.match(r"do\b", text[i:])
    if m:
        end = _statement_end(text, i + m.end())
        w = re.match(r"\s*while\s*\(", text[end:])
        if w:
            end = _match(text, end + w.end() - 1, "(", ")")
        s = text.find(";", end)
        return n if s < 0 else s + 1
    depth = 0
    for j in range(i, n):
        ch = text[j]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == ";" and depth <= 0:
            return j + 1
    return n


def find_loops(src: Source) -> List[Loop]:
    """Every loop of the synthesis view, with its label and its own pragmas."""
    text = src.synth
    loops: List[Loop] = []
    skip: Set[int] = set()
    for m in re.finditer(r"\b(for|while|do)\b", text):
        if m.start() in skip:
            continue
        kw = m.group(1)
        if kw == "do":
            if not re.match(r"\s*\{", text[m.end():]):
                continue
            body_open = text.index("{", m.end())
            body = (body_open, _match(text, body_open, "{", "}"))
            w = re.match(r"\s*while\b", text[body[1]:])
            if w:
                skip.add(body[1] + w.end() - 5)
            header = ""
        else:
            p = re.match(r"\s*\(", text[m.end():])
            if not p:
                continue
            paren = m.end() + p.end() - 1
            close = _match(text, paren, "(", ")")
            header = text[paren + 1:close - 1]
            j = close
            while j < len(text) and text[j].isspace():
                j += 1
            if j < len(text) and text[j] == ";":
                continue  # the while of a do loop written without braces, or an empty loop
            body = (j, _statement_end(text, j))
        label = None
        lm = re.search(r"(?<![:\w])([A-Za-z_]\w*)\s*:\s*$", text[max(0, m.start() - 200):m.start()])
        if lm and lm.group(1) not in ("default", "public", "private", "protected"):
            before = text[max(0, m.start() - 200):m.start()][:lm.start()]
            if not re.search(r"\bcase\s+[^;:]*$", before) and not re.search(r"\?[^;:]*$", before):
                label = lm.group(1)
        loops.append(Loop(src, kw, m.start(), header, body, label))
    # each pragma to the innermost loop holding it
    for pm in _PRAGMA.finditer(text):
        holders = [lp for lp in loops if lp.body[0] <= pm.start() < lp.body[1]]
        if holders:
            owner = min(holders, key=lambda lp: lp.body[1] - lp.body[0])
            owner.pragmas.append((pm.start(), pm.group(1).strip()))
    return loops


# ------------------------------------------------------------------ the sources' names
@dataclass
class Names:
    """What the lint knows about the sources' names: constants, types, structs."""

    constants: Set[str] = field(default_factory=set)
    defines: Dict[str, str] = field(default_factory=dict)
    typedefs: Dict[str, str] = field(default_factory=dict)
    #: struct name -> (body text, template type params)
    structs: Dict[str, Tuple[str, Set[str]]] = field(default_factory=dict)
    member_typedefs: Dict[str, Dict[str, str]] = field(default_factory=dict)
    #: options of every HLS pragma of the synthesis view
    pragmas: List[Dict[str, str]] = field(default_factory=list)


_BUILTIN = {"bool", "char", "short", "int", "long", "unsigned", "signed", "float", "double", "size_t",
            "int8_t", "int16_t", "int32_t", "int64_t", "uint8_t", "uint16_t", "uint32_t", "uint64_t", "void"}
_TYPE_WORDS = _BUILTIN | {"const", "volatile", "static", "constexpr", "typename", "struct", "class", "sizeof"}


def collect_names(sources: Iterable[Source]) -> Names:
    """Constants, typedefs, structs and pragmas of every source's synthesis view."""
    names = Names()
    for src in sources:
        text = src.synth
        names.pragmas.extend(_pragma_options(m.group(1)) for m in _PRAGMA.finditer(text))
        for m in re.finditer(r"\b(?:static\s+const(?:expr)?|constexpr|static\s+constexpr)\s+[\w:<>,\s]*?\b"
                             r"([A-Za-z_]\w*)\s*(?:=|\{)", text):
            names.constants.add(m.group(1))
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?![\w(])[ \t]*(.*)$", src.code, re.MULTILINE):
            names.defines[m.group(1)] = m.group(2).strip()
            names.constants.add(m.group(1))
        for m in re.finditer(r"\benum\b[^{;]*\{([^}]*)\}", text):
            for item in m.group(1).split(","):
                word = item.split("=")[0].strip()
                if re.fullmatch(r"[A-Za-z_]\w*", word):
                    names.constants.add(word)
        for m in re.finditer(r"\btypedef\s+([^;{}]+?)\s+([A-Za-z_]\w*)\s*;", text):
            names.typedefs[m.group(2)] = m.group(1)
        for m in re.finditer(r"\busing\s+([A-Za-z_]\w*)\s*=\s*([^;]+);", text):
            names.typedefs[m.group(1)] = m.group(2)
        for block in _blocks(text):
            if block.kind != "type":
                continue
            sm = re.search(r"\b(struct|class)\s+([A-Za-z_]\w*)\s*(<[^{]*>)?\s*(:[^{]*)?$", block.header.strip())
            if not sm:
                continue
            name = sm.group(2)
            body = text[block.open + 1:block.close - 1]
            if sm.group(3):  # a specialisation: keep the primary template's entry
                names.structs.setdefault(name, (body, _template_params(block.header)[0]))
            else:
                names.structs[name] = (body, _template_params(block.header)[0])
            for t in re.finditer(r"\btypedef\s+([^;{}]+?)\s+([A-Za-z_]\w*)\s*;", body):
                names.member_typedefs.setdefault(name, {})[t.group(2)] = t.group(1)
    return names


def integer_constants(sources: Iterable[Source]) -> Dict[str, int]:
    """``static const``/``constexpr``/``#define`` names of the sources whose value is an integer expression."""
    pending = []
    for src in sources:
        for m in re.finditer(r"\b(?:static\s+)?(?:const|constexpr)\s+[\w\s]*?\b([A-Za-z_]\w*)\s*=\s*([^;{}]+);",
                             src.synth):
            pending.append((m.group(1), m.group(2)))
        for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?![\w(])[ \t]+(.+)$", src.code, re.MULTILINE):
            pending.append((m.group(1), m.group(2)))
    values: Dict[str, int] = {}
    for _ in range(4):  # constants defined from constants, in any order
        for name, expr in pending:
            if name not in values:
                v = _eval_int(expr, values)
                if v is not None:
                    values[name] = v
    return values


def _is_constant_expr(expr: str, names: Names, template_values: Set[str], template_types: Set[str]) -> bool:
    expr = re.sub(r"\bsizeof\s*\([^)]*\)", "0", expr)
    # X::Y and X<...>::Y: Y must be a constant member, or X a template type parameter
    qualified = r"([A-Za-z_]\w*)\s*(?:<[^;]*?>)?\s*::\s*([A-Za-z_]\w*)"
    for m in re.finditer(qualified, expr):
        if m.group(1) not in template_types and m.group(2) not in names.constants:
            return False
    expr = re.sub(qualified, " 0 ", expr)
    # casts are fine, calls are not
    expr = re.sub(r"\(\s*(?:const\s+)?(?:unsigned|signed|int|long|short|uint\w*_t|int\w*_t|size_t)"
                  r"(?:\s+(?:int|long))?\s*\)", " ", expr)
    if re.search(r"[A-Za-z_]\w*\s*\(", expr):
        return False
    for word in re.findall(r"(?<![\w.])([A-Za-z_]\w*)", expr):
        if word in _TYPE_WORDS or word in names.constants or word in template_values:
            continue
        return False
    return not re.search(r"[.\[]|->", expr)


def constant_bounds(loop: Loop, names: Names, template_values: Set[str], template_types: Set[str]) -> bool:
    """Whether ``loop`` is ``for (v = A; v OP B; step)`` with A, B and the step constant."""
    if loop.keyword != "for":
        return False
    parts = _split_top(loop.header, ";", angles=False)
    if len(parts) != 3:
        return False
    init, cond, step = (p.strip() for p in parts)
    im = re.fullmatch(r"(?:[\w:<>\s]+?\s+)?([A-Za-z_]\w*)\s*=\s*(.+)", init, re.DOTALL)
    if not im or len(_split_top(init, ",", angles=False)) > 1:
        return False
    var, start = im.group(1), im.group(2)

    def const(e):
        return _is_constant_expr(e, names, template_values, template_types)

    cm = re.fullmatch(rf"{var}\s*(<=|<|>=|>|!=)\s*(.+)", cond, re.DOTALL) or \
        re.fullmatch(rf"(.+?)\s*(<=|<|>=|>|!=)\s*{var}", cond, re.DOTALL)
    if not cm:
        return False
    bound = cm.group(2) if cm.group(1) in ("<=", "<", ">=", ">", "!=") else cm.group(1)
    if "&&" in bound or "||" in bound:
        return False
    sm = re.fullmatch(rf"(?:\+\+|--)\s*{var}|{var}\s*(?:\+\+|--)|{var}\s*(?:\+=|-=)\s*(.+)", step, re.DOTALL)
    if not sm:
        return False
    return const(start) and const(bound) and (sm.group(1) is None or const(sm.group(1)))


# --------------------------------------------------------------------------- schedule
_SCHEDULE_ENTRY = re.compile(r"\bZSKIP_SCHEDULE\s*\(\s*([A-Za-z_]\w*)\s*,\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)")


@dataclass(frozen=True)
class ScheduleEntry:
    label: str
    ii: int
    depth: int
    line: int


def _eval_int(expr: str, values: Dict[str, int]) -> Optional[int]:
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr.strip())
    if not re.fullmatch(r"[\w\s+\-*/%()]+", expr) or "**" in expr:
        return None
    for word in set(re.findall(r"[A-Za-z_]\w*", expr)):
        if word not in values:
            return None
    try:
        return int(eval(re.sub(r"(?<!/)/(?!/)", "//", expr), {"__builtins__": {}}, dict(values)))
    except Exception:
        return None


def _parse_schedule(src: Source) -> Tuple[List[ScheduleEntry], List[Violation]]:
    values: Dict[str, int] = {}
    text = src.code
    for m in re.finditer(r"\b(?:static\s+)?(?:const|constexpr)\s+[\w\s]*?\b([A-Za-z_]\w*)\s*=\s*([^;]+);", text):
        v = _eval_int(m.group(2), values)
        if v is not None:
            values[m.group(1)] = v
    for m in re.finditer(r"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_]\w*)(?![\w(])[ \t]+(.+)$", text, re.MULTILINE):
        v = _eval_int(m.group(2), values)
        if v is not None:
            values[m.group(1)] = v
    entries, problems = [], []
    for m in _SCHEDULE_ENTRY.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if re.match(r"[ \t]*#[ \t]*define\b", text[line_start:m.start() + 1]) and \
                re.match(r"[ \t]*#[ \t]*define[ \t]+ZSKIP_SCHEDULE\b", text[line_start:]):
            continue  # the X-macro's own definition
        line = src.line_of(m.start())
        ii, depth = _eval_int(m.group(2), values), _eval_int(m.group(3), values)
        for name, expr, value in (("II", m.group(2), ii), ("DEPTH", m.group(3), depth)):
            if value is None:
                problems.append(Violation(src.display, line, "schedule-entry",
                                          f"{m.group(1)}: {name} '{expr}' is neither an integer literal nor a "
                                          f"constant defined in {src.display}"))
        if ii is not None and ii < 1:
            problems.append(Violation(src.display, line, "schedule-entry", f"{m.group(1)}: II must be >= 1, got {ii}"))
        if depth is not None and depth < 0:
            problems.append(Violation(src.display, line, "schedule-entry",
                                      f"{m.group(1)}: DEPTH must be >= 0, got {depth}"))
        entries.append(ScheduleEntry(m.group(1), ii if ii is not None else -1, depth if depth is not None else -1,
                                     line))
    return entries, problems


def read_schedule(path: Path) -> Dict[str, ScheduleEntry]:
    """The schedule table ``hls/common/schedule.h``: loop label -> (II, DEPTH), constants resolved.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: an entry's II or DEPTH is not an integer, or a label appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schedule table not found: {path}")
    entries, problems = _parse_schedule(Source(path, str(path)))
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    table: Dict[str, ScheduleEntry] = {}
    for e in entries:
        if e.label in table:
            raise ValueError(f"{path}:{e.line}: {e.label} is already in the table (line {table[e.label].line})")
        table[e.label] = e
    return table


# --------------------------------------------------------------------------- the rules
def synthesised_sources(hls_dir: Path) -> List[Path]:
    """The files Vitis HLS synthesises or includes: every .h/.cpp but testbenches and the emu bridge."""
    hls_dir = Path(hls_dir)
    out = []
    for path in sorted(hls_dir.rglob("*")):
        if path.suffix not in (".h", ".hpp", ".cpp", ".cc") or not path.is_file():
            continue
        rel = path.relative_to(hls_dir)
        name = path.name
        if rel.parts[0] == "emu" or name.endswith(("_tb.cpp", "_tb_data.h")) or name.startswith("tb_"):
            continue
        out.append(path)
    return out


def _rule_loops(sources: List[Source], names: Names, schedule: Optional[Source],
                entries: List[ScheduleEntry]) -> List[Violation]:
    out: List[Violation] = []
    table = {e.label: e for e in entries}
    pipelined: Dict[str, List[Loop]] = {}
    values = integer_constants(sources)
    for src in sources:
        blocks = _blocks(src.synth)
        for loop in find_loops(src):
            types, values = set(), set()
            for b in _enclosing(blocks, loop.start):
                t, v = _template_params(b.header)
                types |= t
                values |= v
            const = constant_bounds(loop, names, values, types)
            where = loop.line
            pipes = [o for _, o in loop.pragma("PIPELINE") if "off" not in o and o.get("off", "") != "true"]
            if pipes:
                if loop.label is None:
                    out.append(Violation(src.display, where, "pipeline-label",
                                         "pipelined loop has no label: the schedule table is keyed by loop label"))
                else:
                    pipelined.setdefault(loop.label, []).append(loop)
                    if schedule is not None and loop.label not in table:
                        out.append(Violation(src.display, where, "pipeline-label",
                                             f"pipelined loop {loop.label} has no ZSKIP_SCHEDULE entry in "
                                             f"{schedule.display}"))
                    elif loop.label in table and table[loop.label].ii > 0:
                        stated = pipes[0].get("ii", "1")
                        requested = _eval_int(stated, values)
                        if requested is not None and requested != table[loop.label].ii:
                            out.append(Violation(src.display, where, "pipeline-ii",
                                                 f"loop {loop.label} requests II={stated} ({requested}) but the "
                                                 f"schedule table says II={table[loop.label].ii}: state the II "
                                                 f"the hardware builds in both"))
            unrolls = [o for _, o in loop.pragma("UNROLL") if "off" not in o and o.get("off", "") != "true"]
            full_unroll = [o for o in unrolls if "factor" not in o]
            if full_unroll and not const:
                out.append(Violation(src.display, where, "unroll-bound",
                                     f"{loop.describe()} is fully unrolled but its bounds are not constant "
                                     f"({loop.keyword} ({_short(loop.header)})): lanes need a constant trip count"))
            if not const:
                counts = loop.pragma("LOOP_TRIPCOUNT")
                if not counts:
                    out.append(Violation(src.display, where, "loop-bound",
                                         f"{loop.describe()} has a variable bound and no LOOP_TRIPCOUNT"))
                else:
                    maximum = counts[0][1].get("max", "")
                    if not maximum:
                        out.append(Violation(src.display, where, "loop-bound",
                                             f"{loop.describe()}: LOOP_TRIPCOUNT without max="))
                    elif re.fullmatch(r"\d+[uUlL]*", maximum):
                        out.append(Violation(src.display, where, "loop-bound",
                                             f"{loop.describe()}: LOOP_TRIPCOUNT max={maximum} is a bare number; "
                                             f"name the maximum (a static const of the config)"))
            if full_unroll and loop.keyword == "for":
                out.extend(_lane_partition(src, loop, blocks, names))
    for label, loops in pipelined.items():
        if len(loops) > 1:
            first = loops[0]
            for other in loops[1:]:
                out.append(Violation(other.src.display, other.line, "pipeline-label",
                                     f"label {label} also names the pipelined loop at "
                                     f"{first.src.display}:{first.line}: one schedule entry cannot describe both"))
    if schedule is not None:
        all_labels = {lp.label for src in sources for lp in find_loops(src) if lp.label}
        for e in entries:
            if e.label in pipelined:
                continue
            if e.label in all_labels:
                msg = f"{e.label} names a loop without a PIPELINE pragma"
            else:
                msg = f"{e.label} names no loop of the synthesised sources"
            out.append(Violation(schedule.display, e.line, "schedule-entry", msg))
        seen: Dict[str, int] = {}
        for e in entries:
            if e.label in seen:
                out.append(Violation(schedule.display, e.line, "schedule-entry",
                                     f"{e.label} is already in the table (line {seen[e.label]})"))
            seen.setdefault(e.label, e.line)
    return out


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


#: words that may stand just before an array access without declaring it
_NOT_TYPES = {"return", "else", "case", "delete", "throw", "sizeof", "new", "do"}

_ACCESS = re.compile(r"((?:[A-Za-z_]\w*\s*(?:\[[^\]]*\]\s*)*(?:\.|->)\s*)*)([A-Za-z_]\w*)\s*\[")


def _lane_partition(src: Source, loop: Loop, blocks: List[_Block], names: Names) -> List[Violation]:
    text = src.synth
    hm = re.fullmatch(r"\s*(?:[\w:<>\s]+?\s+)?([A-Za-z_]\w*)\s*=.*", _split_top(loop.header, ";", angles=False)[0], re.DOTALL)
    if not hm:
        return []
    body = text[loop.body[0]:loop.body[1]]
    # every unrolled copy runs the body, so a scalar written in it (n = ..., ++n, s += ...)
    # has one value per lane, like the loop variable
    lane = {hm.group(1)}
    lane.update(re.findall(r"(?<![\w.>])([A-Za-z_]\w*)\s*(?:\+\+|--|(?:[-+*/%|&^]|<<|>>)?=(?!=))", body))
    lane.update(re.findall(r"(?:\+\+|--)\s*([A-Za-z_]\w*)(?!\s*[\[.]|\s*->)", body))
    function = next((b for b in _enclosing(blocks, loop.start) if b.kind == "function"), None)
    fn_text = (function.header + text[function.open:function.close]) if function else ""
    fn_pragmas = [_pragma_options(m.group(1)) for m in _PRAGMA.finditer(fn_text)]
    out, seen = [], set()
    for m in _ACCESS.finditer(body):
        name, path = m.group(2), m.group(1)
        if name in _TYPE_WORDS or name in names.structs:
            continue
        # the subscripts that follow
        i, dims = loop.body[0] + m.end() - 1, []
        while i < len(text) and text[i] == "[":
            j = _match(text, i, "[", "]")
            dims.append(text[i + 1:j - 1])
            k = j
            while k < len(text) and text[k] in " \t":
                k += 1
            i = k
        # a declaration (a type name just before the array's name) is not an access
        before = re.search(r"([A-Za-z_]\w*|>)\s*[*&]*\s*$", body[:m.start()])
        if not path and before and before.group(1) not in _NOT_TYPES:
            continue
        for d, index in enumerate(dims, start=1):
            used = set(re.findall(r"[A-Za-z_]\w*", index)) & lane
            if not used or (name, d) in seen:
                continue
            seen.add((name, d))
            if _partitioned(name, d, path, fn_text, fn_pragmas, names):
                continue
            via = sorted(used)[0]
            pointer = not path and function is not None and \
                re.search(rf"[*]\s*{re.escape(name)}\s*[,)]", function.header)
            why = ("is a pointer parameter (an m_axi port or a caller's memory): a lane cannot own a bank of it; "
                   "move wide words, or pass an array partitioned where it is declared" if pointer else
                   f"is not partitioned on dim {d} where it is declared "
                   f"(ARRAY_PARTITION/ARRAY_RESHAPE variable={name} dim={d})")
            out.append(Violation(src.display, src.line_of(loop.body[0] + m.start()), "lane-partition",
                                 f"{path.strip()}{name}[...] dim {d} is indexed by lane index {via} of unrolled "
                                 f"{loop.describe()} but {why}"))
    return out


def _dim_ok(options: Dict[str, str], dim: int) -> bool:
    value = options.get("dim", "1")
    return value in ("0", str(dim))


def _partitioned(name: str, dim: int, path: str, fn_text: str, fn_pragmas, names: Names) -> bool:
    def pragma_names(opts):
        var = opts.get("variable", "")
        return opts[""] in ("ARRAY_PARTITION", "ARRAY_RESHAPE"), re.split(r"\.|->", var)[-1].strip(), var

    declared_here = re.search(rf"(?:[\w>]\s*[*&]?\s+|[*&]\s*){re.escape(name)}\s*(?:\[|[,)=;])", fn_text)
    if not path and declared_here:
        return any(ok and last == name and var.strip() == name and _dim_ok(o, dim)
                   for o in fn_pragmas for ok, last, var in [pragma_names(o)])
    # a struct member: a pragma in the struct body next to the member, or variable=x.member
    for body, _ in names.structs.values():
        if not re.search(rf"\b{re.escape(name)}\s*\[", body):
            continue
        for pm in _PRAGMA.finditer(body):
            o = _pragma_options(pm.group(1))
            ok, last, var = pragma_names(o)
            if ok and last == name and _dim_ok(o, dim):
                return True
    return any(ok and last == name and _dim_ok(o, dim) and ("." in var or "->" in var or not path)
               for o in names.pragmas for ok, last, var in [pragma_names(o)])


def _rule_static(sources: List[Source], names: Names) -> List[Violation]:
    out = []
    for src in sources:
        text = src.synth
        blocks = _blocks(text)
        for m in re.finditer(r"\bstatic\b(?!_)", text):
            rest = text[m.end():m.end() + 300]
            dm = re.match(r"\s*((?:(?:const|volatile|constexpr|inline|thread_local|typename)\s+)*)"
                          r"((?:[A-Za-z_]\w*\s*(?:<[^;{}()]*?>)?\s*::\s*)*[A-Za-z_]\w*\s*(?:<[^;{}()]*?>)?)"
                          r"\s*([*&]*)\s*([A-Za-z_]\w*)\s*([\[=;,({])", rest)
            if not dm:
                continue
            quals, type_text, ptr, var, nxt = dm.groups()
            if "inline" in quals or "constexpr" in quals and nxt == "(":
                continue
            scopes = _enclosing(blocks, m.start())
            in_function = any(b.kind in ("function", "other") for b in scopes)
            if nxt == "(" and not in_function:
                continue  # a function
            if nxt == "{" and not in_function:
                continue
            if "*" in ptr:
                continue
            verdict = _has_constructor(type_text, names, set())
            if verdict:
                out.append(Violation(src.display, src.line_of(m.start()), "static-constructor",
                                     f"static {_short(type_text, 50)} {var}: {verdict}; a static object in "
                                     f"synthesised code must be a plain type"))
    return out


_PLAIN = re.compile(r"^(?:ap_u?int|ap_u?fixed|ap_range_ref|ap_bit_ref)\b")


def _has_constructor(type_text: str, names: Names, visiting: Set[str], struct_types: Set[str] = frozenset()) -> str:
    """'' when the type is plain, else why it is not."""
    t = " ".join(type_text.replace("typename", " ").replace("const", " ").split())
    base = re.sub(r"<.*>", "", t).strip()
    if base in _BUILTIN or _PLAIN.match(t) or base in struct_types:
        return ""
    if "::" in base:
        owner, _, member = base.rpartition("::")
        owner = owner.split("::")[-1].strip()
        target = names.member_typedefs.get(owner, {}).get(member)
        if target is None:
            if owner in ("std", "hls"):
                return f"{base} has a constructor"
            return f"cannot tell whether {base} has a constructor"
        return _has_constructor(target, names, visiting)
    if base in names.typedefs:
        return _has_constructor(names.typedefs[base], names, visiting)
    if base in names.defines and names.defines[base]:
        return _has_constructor(names.defines[base], names, visiting)
    if base in names.structs:
        if base in visiting:
            return ""
        body, params = names.structs[base]
        flat = _depth0(body)
        if re.search(rf"(?<![~\w]){re.escape(base)}\s*\(", flat):
            return f"struct {base} declares a constructor"
        for member in re.finditer(r"(?:^|;)\s*((?:[A-Za-z_]\w*\s*(?:<[^;]*?>)?\s*::\s*)*[A-Za-z_]\w*\s*(?:<[^;]*?>)?)"
                                  r"\s+([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*(?:\[[^;]*\])?\s*;", flat):
            mtype = member.group(1)
            if re.match(r"(static|typedef|using|friend|return)\b", mtype):
                continue
            why = _has_constructor(mtype, names, visiting | {base}, set(params))
            if why:
                return f"member {member.group(2)} of struct {base}: {why}"
        return ""
    return f"type {base} is not known to be plain"


def _depth0(body: str) -> str:
    """``body`` with every nested {...} removed (member functions' bodies, nested types)."""
    out, depth = [], 0
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                out.append(";")
            continue
        if ch == "}":
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


_ALLOWED_CALL = re.compile(
    r"^(?:assert|static_assert|printf|fprintf|puts|fputs|abort|exit|"
    r"std\s*::\s*(?:printf|fprintf|puts|abort|exit)|"
    r"[A-Za-z_]\w*(?:ASSERT|TRACE|assert|trace)\w*)\s*\(")
_ALLOWED_STREAM = re.compile(r"^std\s*::\s*(?:cout|cerr|clog)\s*<<")


def _trace_only(code: str) -> bool:
    """Whether ``code`` (comment-free) is only tracing and assertions."""
    i, n = 0, len(code)
    while True:
        while i < n and (code[i].isspace() or code[i] == ";"):
            i += 1
        if i >= n:
            return True
        rest = code[i:]
        if rest.startswith("#"):
            line_end = code.find("\n", i)
            line = code[i:n if line_end < 0 else line_end]
            if not re.match(r"#\s*(include\s*<(?:cassert|assert\.h|cstdio|stdio\.h|iostream|cstdlib|stdlib\.h)>|"
                            r"define\s+\w*(?:ASSERT|TRACE)\w*\b|undef\b|pragma\s+HLS\b)", line, re.IGNORECASE):
                return False
            i = n if line_end < 0 else line_end
            continue
        if rest.startswith("{"):
            end = _match(code, i, "{", "}")
            if not _trace_only(code[i + 1:end - 1]):
                return False
            i = end
            continue
        im = re.match(r"if\s*\(", rest)
        if im:
            close = _match(code, i + im.end() - 1, "(", ")")
            cond = code[i + im.end():close - 1]
            if re.search(r"(?<![=!<>])=(?!=)|\+\+|--", cond):
                return False
            end = _statement_end(code, close)
            if not _trace_only(code[close:end]):
                return False
            e = re.match(r"\s*else\b", code[end:])
            if e:
                start = end + e.end()
                end = _statement_end(code, start)
                if not _trace_only(code[start:end]):
                    return False
            i = end
            continue
        end = _statement_end(code, i)
        stmt = code[i:end].strip()
        if not (_ALLOWED_CALL.match(stmt) or _ALLOWED_STREAM.match(stmt)):
            return False
        i = end


def _csim_regions(src: Source) -> List[Tuple[int, int, int]]:
    """(directive line, first line, last line) of every outermost branch only C simulation compiles."""
    regions = []
    for b in src.groups:
        if b.live_synth is False and b.live_csim is not False:
            regions.append((b.line, b.line + 1, b.end_line - 1))
    regions.sort()
    outer = []
    for r in regions:
        if outer and outer[-1][1] <= r[0] <= outer[-1][2]:
            continue
        outer.append(r)
    return outer


def _marker(src: Source, line: int) -> Optional[re.Match]:
    """The csim-path marker on directive ``line``, in the comment lines just above it, or just below."""
    candidates = [line]
    k = line - 1
    while k >= 1 and not src.lines[k - 1].strip() and k in src.comments:
        candidates.append(k)
        k -= 1
    k = line + 1
    while k <= len(src.lines) and not src.lines[k - 1].strip() and k in src.comments:
        candidates.append(k)
        k += 1
    for c in candidates:
        m = CSIM_PATH_MARKER.search(src.comments.get(c, ""))
        if m:
            return m
    return None


def _rule_guards(sources: List[Source], repo_root: Path) -> List[Violation]:
    out = []
    for src in sources:
        for directive, first, last in _csim_regions(src):
            code = "\n".join(src.lines[first - 1:last])
            code = "\n".join("" if _DIRECTIVE.match(l) else l for l in code.split("\n"))
            if _trace_only(code):
                continue
            marker = _marker(src, directive)
            if marker is None:
                out.append(Violation(src.display, directive, "synthesis-guard",
                                     f"lines {first}-{last} compile only in C simulation and are not only tracing "
                                     f"or assertions: prove the path equal to the synthesis form and mark it "
                                     f"'// csim-path: proven by tests/<file>.py::<test>'"))
                continue
            test_file, names = marker.group(1), marker.group(2).split("::")[1:]
            path = repo_root / test_file
            if not path.is_file():
                out.append(Violation(src.display, directive, "synthesis-guard",
                                     f"csim-path names {test_file}, which does not exist"))
                continue
            text = path.read_text()
            if not re.search(rf"^\s*def\s+{re.escape(names[-1])}\s*\(", text, re.MULTILINE) or \
                    (len(names) > 1 and not re.search(rf"^class\s+{re.escape(names[0])}\b", text, re.MULTILINE)):
                out.append(Violation(src.display, directive, "synthesis-guard",
                                     f"csim-path names {test_file}::{'::'.join(names)}, which is not a test "
                                     f"function of that file"))
    return out


def lint(hls_dir: Path, schedule: Optional[Path] = None, repo_root: Optional[Path] = None) -> List[Violation]:
    """Every rule on the synthesised sources of ``hls_dir``; sorted violations (empty: clean).

    ``schedule``: the schedule table (default ``hls_dir/common/schedule.h``; a
    missing table is a violation). ``repo_root``: where ``csim-path`` test
    paths are resolved (default: the parent of ``hls_dir``).
    """
    hls_dir = Path(hls_dir)
    if not hls_dir.is_dir():
        raise FileNotFoundError(f"hls directory not found: {hls_dir}")
    repo_root = Path(repo_root) if repo_root is not None else hls_dir.parent
    schedule = Path(schedule) if schedule is not None else hls_dir / SCHEDULE_HEADER

    def display(p: Path) -> str:
        try:
            return str(p.resolve().relative_to(repo_root.resolve()))
        except ValueError:
            return str(p)

    sources = [Source(p, display(p)) for p in synthesised_sources(hls_dir)]
    names = collect_names(sources)
    out: List[Violation] = []
    sched_src, entries = None, []
    if schedule.is_file():
        sched_src = next((s for s in sources if s.path.resolve() == schedule.resolve()), None) or \
            Source(schedule, display(schedule))
        entries, problems = _parse_schedule(sched_src)
        out.extend(problems)
        if not entries:
            out.append(Violation(sched_src.display, 1, "schedule-entry", "no ZSKIP_SCHEDULE(LABEL, II, DEPTH) entry"))
    else:
        out.append(Violation(display(schedule), 1, "schedule-entry", "schedule table not found"))
    out.extend(_rule_loops(sources, names, sched_src, entries))
    out.extend(_rule_static(sources, names))
    out.extend(_rule_guards(sources, repo_root))
    return sorted(set(out))


def default_hls_dir() -> Path:
    """The shipped ``hls/`` folder (``zskip.HLS_DIR``)."""
    from .. import HLS_DIR
    return HLS_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hls-dir", default=None, metavar="DIR", help="the HLS sources (default: the shipped hls/)")
    parser.add_argument("--schedule", default=None, metavar="FILE",
                        help="the schedule table (default: <hls-dir>/common/schedule.h)")
    parser.add_argument("--rule", action="append", choices=RULES, default=None,
                        help="report only this rule (repeatable)")


def run(args) -> int:
    """Print the violations, one per line; 1 if any, else 0."""
    hls_dir = Path(args.hls_dir) if args.hls_dir else default_hls_dir()
    violations = lint(hls_dir, Path(args.schedule) if args.schedule else None)
    if args.rule:
        violations = [v for v in violations if v.rule in args.rule]
    for v in violations:
        print(v)
    if violations:
        print(f"hls-lint: {len(violations)} violation(s)", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="zskip hls-lint", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
