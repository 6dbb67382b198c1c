"""What check_kernel found, as text for a terminal and HTML for a notebook."""
import html
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OutputCheck:
    """One output of one test case, compared with what it should be."""
    case: str                   # e.g. "B=1 T=1" or "model call 2"
    output: str                 # the argument's name, e.g. "dinp"
    max_abs: float
    max_rel: float              # max |got - expected| / max(|expected|, floor)
    passed: bool
    worst_index: tuple = None   # where |got - expected| is largest
    expected: float = None      # ... and the two values there
    got: float = None
    problem: str = ""           # a diagnosis in words ("not written", "NaN at ...")
    error_map: np.ndarray = field(default=None, repr=False)   # |got - expected| as 2-D


@dataclass
class KernelReport:
    name: str
    passed: bool
    fault: str = ""             # why the candidate could not be checked at all
    fault_kind: str = ""        # "signature", "IndexError", "timeout", "crash", ...
    traceback: str = ""
    outputs: list = field(default_factory=list)     # [OutputCheck]
    gradients: list = field(default_factory=list)   # [gradcheck.GradientCheck]
    timings_ms: dict = field(default_factory=dict)  # "yours" / "shipped" / "reference" -> ms
    timing_sizes: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    printed: str = ""           # what the candidate printed while checked
    isolated: bool = True
    tolerance: float = 0.0
    kernel: object = field(default=None, repr=False)   # the build that was checked (to swap in)

    # ------------------------------------------------------------------ queries
    def failures(self):
        return [c for c in self.outputs if not c.passed]

    def worst(self, output=None):
        """The OutputCheck with the largest error (for `output`, if given)."""
        checks = [c for c in self.outputs if output in (None, c.output)]
        return max(checks, key=lambda c: c.max_rel, default=None)

    def headline(self):
        if self.fault:
            return f"{self.name}: FAILED - {self.fault}"
        if self.passed:
            worst = self.worst()
            return (f"{self.name}: passed {len(self.outputs)} comparisons"
                    + (f" (worst relative error {worst.max_rel:.1e})" if worst else ""))
        return (f"{self.name}: FAILED {len(self.failures())} of {len(self.outputs)} comparisons"
                + ("" if all(g.passed for g in self.gradients) else ", and the gradient check"))

    # ------------------------------------------------------------------ text
    def __str__(self):
        lines = [self.headline()]
        if self.traceback:
            lines += ["  where:", *("    " + l for l in self.traceback.rstrip().splitlines())]
        shown = _grouped(self.failures())
        lines += [f"  {case}: {output}: {text}" for case, output, text in shown[:8]]
        if len(shown) > 8:
            lines.append(f"  ... and {len(shown) - 8} more")
        for g in self.gradients:
            verdict = "ok" if g.passed else "WRONG"
            lines.append(f"  finite differences, {g.gradient}: {verdict} (error {g.error:.1e})")
        if self.timings_ms:
            lines.append("  speed: " + ", ".join(f"{k} {v:.3g} ms" for k, v in self.timings_ms.items()))
        lines += [f"  note: {n}" for n in self.notes]
        if self.printed:
            lines += ["  it printed:", *("    " + l for l in self.printed.rstrip().splitlines()[-10:])]
        return "\n".join(lines)

    def __repr__(self):
        return f"<KernelReport {self.headline()}>"

    # ------------------------------------------------------------------ HTML
    def _repr_html_(self):
        colour = "#1a7f37" if self.passed else "#b42318"
        parts = [f'<div style="font-family:sans-serif"><b style="color:{colour}">'
                 f'{html.escape(self.headline())}</b>']
        if self.traceback:
            parts.append(f"<pre>{html.escape(self.traceback)}</pre>")
        if self.outputs:
            parts.append(_table(["case", "output", "max abs error", "max rel error", "", "detail"],
                                [[c.case, c.output, f"{c.max_abs:.2e}", f"{c.max_rel:.2e}",
                                  "ok" if c.passed else "✗", _describe(c) if not c.passed else ""]
                                 for c in self.outputs]))
        if self.gradients:
            parts.append(_table(["gradient", "finite-difference error", ""],
                                [[g.gradient, f"{g.error:.1e}", "ok" if g.passed else "✗"]
                                 for g in self.gradients]))
        if self.timings_ms:
            sizes = " ".join(f"{k}={v}" for k, v in self.timing_sizes.items())
            parts.append(_table(["kernel", f"ms per call ({sizes})"],
                                [[k, f"{v:.3g}"] for k, v in self.timings_ms.items()]))
        parts += [f"<p>{html.escape(n)}</p>" for n in self.notes]
        if self.printed:
            parts.append(f"<p>It printed:</p><pre>{html.escape(self.printed[-4000:])}</pre>")
        return "".join(parts) + "</div>"


def _grouped(failures):
    """(cases, output, description): one line for a problem that every case shares."""
    groups = {}
    for c in failures:
        key = (c.output, c.problem) if c.problem else (c.output, id(c))
        groups.setdefault(key, []).append(c)
    lines = []
    for checks in groups.values():
        cases = checks[0].case if len(checks) == 1 else f"{len(checks)} cases"
        lines.append((cases, checks[0].output, _describe(checks[0])))
    return lines


def _describe(c):
    if c.problem:
        return c.problem
    if c.worst_index is None:
        return f"max relative error {c.max_rel:.2e}"
    return (f"off by up to {c.max_rel:.1e} (relative); worst at index {c.worst_index}: "
            f"expected {c.expected:.6g}, got {c.got:.6g}")


def _table(header, rows):
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(str(v))}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
