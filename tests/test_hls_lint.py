"""zskip hls-lint: each rule catches a small bad example and passes its good twin.

Every example is a tiny HLS tree written to tmp_path (hls/common/schedule.h
plus one kernel header, tests/ for csim-path markers); the test names the rule
and the line the lint must report, so a rule that stopped firing, or fired on
the good twin, fails here.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zskip.overlay import hls_lint
from zskip.overlay.hls_lint import lint, read_schedule

ROOT = Path(__file__).resolve().parent.parent

SCHEDULE = """\
// II and depth of every pipelined loop (the counters' rule: trip x II + depth)
#ifndef ZSKIP_SCHEDULE_H
#define ZSKIP_SCHEDULE_H
// the X-macro's default expansion is nothing; users define it first
#ifndef ZSKIP_SCHEDULE
#define ZSKIP_SCHEDULE(LABEL, II, DEPTH)
#endif
static const unsigned ADD_LATENCY = 5;
#define ZSKIP_SCHEDULE_TABLE \\
    ZSKIP_SCHEDULE(SCAN, 1, 4) \\
    ZSKIP_SCHEDULE(SUM, ADD_LATENCY, ADD_LATENCY + 2)
#endif
"""

CONFIG = """\
#ifndef CFG_H
#define CFG_H
#define MAX_N 64
struct cfg {
    static const unsigned lanes = 4;
    static const unsigned max_n = MAX_N;
};
static const unsigned TRIP_N = 1024;
#endif
"""


def tree(tmp_path, kernel, schedule=SCHEDULE, tests=None):
    """hls/common/{schedule.h,cfg.h}, hls/k/k.h = kernel, tests/<name> = text; returns the hls dir."""
    hls = tmp_path / "hls"
    (hls / "common").mkdir(parents=True)
    (hls / "k").mkdir()
    if schedule is not None:
        (hls / "common" / "schedule.h").write_text(schedule)
    (hls / "common" / "cfg.h").write_text(CONFIG)
    (hls / "k" / "k.h").write_text(textwrap.dedent(kernel))
    for name, text in (tests or {}).items():
        (tmp_path / "tests").mkdir(exist_ok=True)
        (tmp_path / "tests" / name).write_text(text)
    return hls


def found(hls, rule):
    """(file, line) of every violation of ``rule``."""
    return [(v.path, v.line) for v in lint(hls) if v.rule == rule]


# both pipelined loops of the table, so a kernel built on it is clean of schedule findings
SCAN_AND_SUM = """
template <class CFG>
void scan_sum(const float *src, float *dst, unsigned n) {
SCAN:
    for (unsigned i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=TRIP_N
#pragma HLS PIPELINE II=1
        dst[i] = src[i];
    }
    float s = 0;
SUM:
    for (unsigned i = 0; i < CFG::max_n; ++i) {
#pragma HLS PIPELINE II=5
        s += src[i];
    }
    dst[0] = s;
}
"""


def test_clean_example_passes(tmp_path):
    hls = tree(tmp_path, SCAN_AND_SUM)
    assert lint(hls) == []


# -- pipeline-label ----------------------------------------------------------
def test_pipelined_loop_without_label(tmp_path):
    bad = SCAN_AND_SUM + """
void copy(float *d, unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
#pragma HLS LOOP_TRIPCOUNT max=TRIP_N
#pragma HLS PIPELINE II=1
        d[i] = 0;
    }
}
"""
    hls = tree(tmp_path, bad)
    lines = bad.splitlines()
    line = len(lines) - lines[::-1].index("    for (unsigned i = 0; i < n; ++i) {")
    assert found(hls, "pipeline-label") == [("hls/k/k.h", line)]
    # the good twin: labelled and in the table
    good = bad.replace("    for (unsigned i = 0; i < n; ++i) {\n#pragma HLS LOOP_TRIPCOUNT max=TRIP_N\n#pragma HLS PIPELINE II=1\n        d[i] = 0;",
                       "CLEAR:\n    for (unsigned i = 0; i < n; ++i) {\n#pragma HLS LOOP_TRIPCOUNT max=TRIP_N\n#pragma HLS PIPELINE II=1\n        d[i] = 0;")
    hls2 = tree(tmp_path / "good", good, SCHEDULE.replace("ZSKIP_SCHEDULE(SCAN, 1, 4)",
                                                           "ZSKIP_SCHEDULE(SCAN, 1, 4) ZSKIP_SCHEDULE(CLEAR, 1, 2)"))
    assert lint(hls2) == []


def test_pipelined_loop_missing_from_table_and_duplicate_label(tmp_path):
    bad = SCAN_AND_SUM + """
void copy(float *d) {
COPY:
    for (unsigned i = 0; i < 8; ++i) {
#pragma HLS PIPELINE II=1
        d[i] = 0;
    }
SCAN:
    for (unsigned i = 0; i < 8; ++i) {
#pragma HLS PIPELINE II=1
        d[i] = 1;
    }
}
"""
    hls = tree(tmp_path, bad)
    messages = [v.message for v in lint(hls) if v.rule == "pipeline-label"]
    assert any("COPY has no ZSKIP_SCHEDULE entry" in m for m in messages)
    assert any("label SCAN also names the pipelined loop" in m for m in messages)
    assert len(messages) == 2
    # PIPELINE off is not a pipelined loop
    hls2 = tree(tmp_path / "off", SCAN_AND_SUM + """
void copy(float *d) {
COPY:
    for (unsigned i = 0; i < 8; ++i) {
#pragma HLS PIPELINE off
        d[i] = 0;
    }
}
""")
    assert lint(hls2) == []


# -- schedule-entry ----------------------------------------------------------
def test_table_entry_without_loop(tmp_path):
    schedule = SCHEDULE.replace("ZSKIP_SCHEDULE(SCAN, 1, 4)", "ZSKIP_SCHEDULE(SCAN, 1, 4) ZSKIP_SCHEDULE(GONE, 1, 3)")
    hls = tree(tmp_path, SCAN_AND_SUM, schedule)
    (violation,) = lint(hls)
    line = schedule.splitlines().index("    ZSKIP_SCHEDULE(SCAN, 1, 4) ZSKIP_SCHEDULE(GONE, 1, 3) \\") + 1
    assert (violation.rule, violation.path, violation.line) == ("schedule-entry", "hls/common/schedule.h", line)
    assert "GONE names no loop" in violation.message


def test_table_entry_with_unknown_constant_and_missing_table(tmp_path):
    schedule = SCHEDULE.replace("ZSKIP_SCHEDULE(SCAN, 1, 4)", "ZSKIP_SCHEDULE(SCAN, 1, SCAN_DEPTH)")
    hls = tree(tmp_path, SCAN_AND_SUM, schedule)
    (violation,) = lint(hls)
    assert violation.rule == "schedule-entry" and "DEPTH 'SCAN_DEPTH' is neither" in violation.message
    hls2 = tree(tmp_path / "none", SCAN_AND_SUM, schedule=None)
    rules = {v.rule: v.message for v in lint(hls2)}
    assert rules == {"schedule-entry": "schedule table not found"}


def test_read_schedule_resolves_named_constants(tmp_path):
    hls = tree(tmp_path, SCAN_AND_SUM)
    table = read_schedule(hls / "common" / "schedule.h")
    assert {k: (e.ii, e.depth) for k, e in table.items()} == {"SCAN": (1, 4), "SUM": (5, 7)}
    with pytest.raises(FileNotFoundError, match="schedule table not found"):
        read_schedule(tmp_path / "nope.h")


# -- pipeline-ii -------------------------------------------------------------
@pytest.mark.parametrize("pragma, bad", [
    ("#pragma HLS PIPELINE II=1", True),            # the table says 5: a float recurrence
    ("#pragma HLS PIPELINE", True),                 # Vitis's default II is 1
    ("#pragma HLS PIPELINE II = ADD_LATENCY", False),
    ("#pragma HLS PIPELINE II=5", False),
])
def test_pragma_ii_equals_the_table(tmp_path, pragma, bad):
    kernel = SCAN_AND_SUM.replace("#pragma HLS PIPELINE II=5", pragma)
    hls = tree(tmp_path, kernel)
    assert found(hls, "pipeline-ii") == ([("hls/k/k.h", kernel.splitlines().index("SUM:") + 2)] if bad else [])


# -- unroll-bound ------------------------------------------------------------
UNROLL = SCAN_AND_SUM + """
template <class CFG>
void lanes(float acc[CFG::lanes], const float v, unsigned first, unsigned last) {
#pragma HLS ARRAY_PARTITION variable=acc type=complete dim=1
LANE:
    for (unsigned l = {bounds}) {
#pragma HLS LOOP_TRIPCOUNT max=CFG::lanes
#pragma HLS UNROLL
        acc[l] += v;
    }
}
"""


@pytest.mark.parametrize("bounds, bad", [
    ("first; l < last; ++l", True),
    ("0; l < last; ++l", True),
    ("0; l < CFG::lanes; ++l", False),
    ("0; l < cfg::lanes; l += 1", False),
])
def test_unrolled_loop_needs_constant_bounds(tmp_path, bounds, bad):
    kernel = UNROLL.replace("{bounds}", bounds)
    hls = tree(tmp_path, kernel)
    line = kernel.splitlines().index(f"    for (unsigned l = {bounds}) {{") + 1
    assert found(hls, "unroll-bound") == ([("hls/k/k.h", line)] if bad else [])


# -- loop-bound --------------------------------------------------------------
@pytest.mark.parametrize("pragma, bad", [
    ("", True),
    ("#pragma HLS LOOP_TRIPCOUNT max=64", True),       # a bare number: name the maximum
    ("#pragma HLS LOOP_TRIPCOUNT min=1", True),        # no max
    ("#pragma HLS LOOP_TRIPCOUNT max = TRIP_N / cfg::lanes", False),
])
def test_variable_bound_needs_named_tripcount(tmp_path, pragma, bad):
    kernel = SCAN_AND_SUM + f"""
void walk(float *d, unsigned n) {{
WALK:
    while (n > 0) {{
{pragma}
        d[--n] = 0;
    }}
}}
"""
    hls = tree(tmp_path, kernel)
    line = kernel.splitlines().index("    while (n > 0) {") + 1
    assert found(hls, "loop-bound") == ([("hls/k/k.h", line)] if bad else [])


def test_constant_bound_needs_no_tripcount(tmp_path):
    hls = tree(tmp_path, SCAN_AND_SUM + """
template <class CFG, unsigned N>
void fill(float *d) {
    static const unsigned HALF = N / 2;
FILL:
    for (unsigned i = HALF; i < N + cfg::max_n; i += 2) d[i] = 0;
}
""")
    assert found(hls, "loop-bound") == []


# -- lane-partition ----------------------------------------------------------
LANE_ARRAY = SCAN_AND_SUM + """
template <class CFG>
void banks(const float v) {
    float acc[CFG::lanes][64];
{pragma}
LANE:
    for (unsigned l = 0; l < CFG::lanes; ++l) {
#pragma HLS UNROLL
        const unsigned bank = l;
        acc[bank][3] += v;
    }
}
"""


@pytest.mark.parametrize("pragma, bad", [
    ("", True),
    ("#pragma HLS ARRAY_PARTITION variable=acc type=complete dim=2", True),   # the wrong dimension
    ("#pragma HLS ARRAY_PARTITION variable=acc type=complete dim=1", False),
    ("#pragma HLS ARRAY_PARTITION variable=acc complete", False),             # dim defaults to 1
    ("#pragma HLS ARRAY_RESHAPE variable=acc type=complete dim=0", False),
])
def test_lane_indexed_local_array_is_partitioned(tmp_path, pragma, bad):
    kernel = LANE_ARRAY.replace("{pragma}", pragma)
    hls = tree(tmp_path, kernel)
    line = kernel.splitlines().index("        acc[bank][3] += v;") + 1
    assert found(hls, "lane-partition") == ([("hls/k/k.h", line)] if bad else [])


def test_lane_indexed_struct_member_and_pointer(tmp_path):
    kernel = SCAN_AND_SUM + """
struct engine {
    float acc[4][64];
{member_pragma}
};
void lanes(engine &e, float *ddr, const float v) {
LANE:
    for (unsigned l = 0; l < cfg::lanes; ++l) {
#pragma HLS UNROLL
        e.acc[l][0] += v;
        ddr[l] = v;
    }
}
"""
    bad = kernel.replace("{member_pragma}", "")
    hls = tree(tmp_path, bad)
    lines = bad.splitlines()
    violations = [v for v in lint(hls) if v.rule == "lane-partition"]
    assert [(v.line, v.message.split("[")[0]) for v in violations] == [
        (lines.index("        e.acc[l][0] += v;") + 1, "e.acc"), (lines.index("        ddr[l] = v;") + 1, "ddr")]
    assert "pointer parameter" in violations[1].message
    good = kernel.replace("{member_pragma}", "#pragma HLS ARRAY_PARTITION variable=acc complete dim=1")
    hls2 = tree(tmp_path / "good", good)
    assert [v.line for v in lint(hls2) if v.rule == "lane-partition"] == [
        good.splitlines().index("        ddr[l] = v;") + 1]


def test_a_counter_the_unrolled_body_advances_is_a_lane_index(tmp_path):
    """A compaction that appends up to 4 items per cycle writes 4 addresses of ``out``: 4 ports."""
    kernel = SCAN_AND_SUM + """
void compact(const float in[4], float out[64], unsigned &count) {
#pragma HLS ARRAY_PARTITION variable=in complete
    unsigned n = count;
PACK:
    for (unsigned j = 0; j < 4; ++j) {
#pragma HLS UNROLL
        if (in[j] != 0) {
            out[n] = in[j];
            ++n;
        }
    }
    count = n;
}
"""
    hls = tree(tmp_path, kernel)
    violations = [v for v in lint(hls) if v.rule == "lane-partition"]
    assert [(v.line, v.message.split(" of ")[0]) for v in violations] == [
        (kernel.splitlines().index("            out[n] = in[j];") + 1, "out[...] dim 1 is indexed by lane index n")]


# -- static-constructor ------------------------------------------------------
@pytest.mark.parametrize("decl, bad", [
    ("static scoreboard sb;", True),             # declares a constructor
    ("static holder h;", True),                  # holds a member that has one
    ("static hls::stream<float> s;", True),
    ("static plain_t p;", False),
    ("static float buf[64];", False),
    ("static typename wrap<cfg>::type w;", False),
    ("static const unsigned N = 4;", False),
])
def test_static_object_with_constructor(tmp_path, decl, bad):
    kernel = SCAN_AND_SUM + """
struct scoreboard {
    unsigned now;
    scoreboard() : now(5) {}
};
struct holder { scoreboard sb; float x; };
struct plain_t { float a[4]; unsigned n; };
template <class C> struct wrap { typedef plain_t type; };
void use(float *d) {
    DECL
    d[0] = 1;
}
""".replace("DECL", decl)
    hls = tree(tmp_path, kernel)
    line = kernel.splitlines().index(f"    {decl}") + 1
    assert found(hls, "static-constructor") == ([("hls/k/k.h", line)] if bad else [])


def test_static_in_csim_only_code_is_not_synthesised(tmp_path):
    kernel = SCAN_AND_SUM + """
struct scoreboard { scoreboard() {} };
void use() {
#ifndef __SYNTHESIS__
    // csim-path: proven by tests/test_x.py::test_same
    static scoreboard sb;
#endif
}
"""
    hls = tree(tmp_path, kernel, tests={"test_x.py": "def test_same():\n    pass\n"})
    assert lint(hls) == []


# -- synthesis-guard ---------------------------------------------------------
GUARDED = SCAN_AND_SUM + """
void step(float *d, unsigned n) {
{guard}
{body}
#else
    d[0] = 0;
#endif
}
"""


@pytest.mark.parametrize("guard", ["#ifndef __SYNTHESIS__", "#if !defined(__SYNTHESIS__) && !defined(FAST)",
                                   "#if !defined(__SYNTHESIS__)"])
@pytest.mark.parametrize("body, bad", [
    ("    d[0] = 1;", True),                                          # changes a result
    ('    fprintf(stderr, "n=%u\\n", n);\n    assert(n < 8);', False),  # tracing and assertions
    ('    if (n > 8) { std::cerr << n; ZSKIP_ASSERT(false); }', False),
    ("    if (n++ > 8) assert(false);", True),                        # a side effect in the condition
])
def test_csim_only_code_is_tracing_or_assertions(tmp_path, guard, body, bad):
    kernel = GUARDED.replace("{guard}", guard).replace("{body}", body)
    hls = tree(tmp_path, kernel)
    line = kernel.splitlines().index(guard) + 1
    assert found(hls, "synthesis-guard") == ([("hls/k/k.h", line)] if bad else [])


def test_else_of_ifdef_synthesis_is_csim_only(tmp_path):
    kernel = SCAN_AND_SUM + """
void step(float *d) {
#ifdef __SYNTHESIS__
    d[0] = 0;
#else
    d[0] = 1;
#endif
}
"""
    hls = tree(tmp_path, kernel)
    assert found(hls, "synthesis-guard") == [("hls/k/k.h", kernel.splitlines().index("#else") + 1)]


@pytest.mark.parametrize("marker, test_text, bad", [
    ("// csim-path: proven by tests/test_forms.py::test_fast_equals_synthesis", "def test_fast_equals_synthesis():\n", False),
    ("// csim-path: proven by tests/test_forms.py::test_fast_equals_synthesis", "def test_other():\n", True),
    ("// csim-path: proven by tests/test_nofile.py::test_fast_equals_synthesis", "def test_fast_equals_synthesis():\n", True),
    ("// csim-path: proven by tests/test_forms.py::TestForms::test_fast", "class TestForms:\n    def test_fast(self):\n", False),
])
def test_csim_speed_path_marker_names_an_existing_test(tmp_path, marker, test_text, bad):
    kernel = GUARDED.replace("{guard}", "#ifndef __SYNTHESIS__  " + marker).replace("{body}", "    d[0] = 1;")
    hls = tree(tmp_path, kernel, tests={"test_forms.py": test_text})
    line = kernel.splitlines().index("#ifndef __SYNTHESIS__  " + marker) + 1
    assert found(hls, "synthesis-guard") == ([("hls/k/k.h", line)] if bad else [])
    # the marker may also stand on its own line just above the directive
    above = GUARDED.replace("{guard}", marker + "\n#ifndef __SYNTHESIS__").replace("{body}", "    d[0] = 1;")
    hls2 = tree(tmp_path / "above", above, tests={"test_forms.py": test_text})
    assert bool(found(hls2, "synthesis-guard")) == bad


def test_synthesis_branch_code_is_what_the_rules_see(tmp_path):
    """An unlabelled pipeline in csim-only code is not synthesised; in the synthesis branch it is."""
    loop = "    for (unsigned i = 0; i < 4; ++i) {\n#pragma HLS PIPELINE II=1\n        d[i] = 0;\n    }"
    kernel = SCAN_AND_SUM + f"""
void f(float *d) {{
#ifdef __SYNTHESIS__
{loop}
#else  // csim-path: proven by tests/test_x.py::test_same
{loop}
#endif
}}
"""
    hls = tree(tmp_path, kernel, tests={"test_x.py": "def test_same():\n"})
    assert found(hls, "pipeline-label") == [("hls/k/k.h", kernel.splitlines().index("#ifdef __SYNTHESIS__") + 2)]


# -- testbenches, output format, CLI ---------------------------------------------
def test_testbenches_and_emu_bridge_are_not_linted(tmp_path):
    hls = tree(tmp_path, SCAN_AND_SUM)
    bad = "void f(float *d, unsigned n) { for (unsigned i = 0; i < n; ++i) {\n#pragma HLS PIPELINE\n d[i] = 0; } }\n"
    (hls / "k" / "k_tb.cpp").write_text(bad)
    (hls / "k" / "k_tb_data.h").write_text(bad)
    (hls / "emu").mkdir()
    (hls / "emu" / "bridge.cpp").write_text(bad)
    assert lint(hls) == []
    (hls / "k" / "k.cpp").write_text(bad)
    assert {v.rule for v in lint(hls)} == {"pipeline-label", "loop-bound"}


def test_cli_prints_file_line_rule_and_exits_1(tmp_path):
    hls = tree(tmp_path, GUARDED.replace("{guard}", "#ifndef __SYNTHESIS__").replace("{body}", "    d[0] = 1;"))
    proc = subprocess.run([sys.executable, "-m", "zskip.host.cli", "hls-lint", "--hls-dir", str(hls)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith("hls/k/k.h:") and ": synthesis-guard: " in line
    clean = tree(tmp_path / "clean", SCAN_AND_SUM)
    proc = subprocess.run([sys.executable, "-m", "zskip.host.cli", "hls-lint", "--hls-dir", str(clean)],
                          capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, ""), proc.stderr


SCHEDULE_HEADER = ROOT / "hls" / "common" / "schedule.h"


def test_the_shipped_sources_parse():
    """Whatever the tree's state, the lint reads every shipped source and reports lines that exist."""
    sources = hls_lint.synthesised_sources(ROOT / "hls")
    assert ROOT / "hls" / "zskip_top" / "zskip_top.cpp" in sources
    assert not any(p.name.endswith("_tb.cpp") or p.parent.name == "emu" for p in sources)
    for v in lint(ROOT / "hls"):
        assert v.rule in hls_lint.RULES
        path = ROOT / v.path
        if path.exists():
            assert 1 <= v.line <= len(path.read_text().splitlines()), v


@pytest.mark.skipif(not SCHEDULE_HEADER.exists(),
                    reason="hls/common/schedule.h (the schedule table, issue 11 engine work) does not exist yet")
def test_the_shipped_hls_sources_pass_the_lint():
    violations = lint(ROOT / "hls")
    assert violations == [], "\n".join(str(v) for v in violations)
