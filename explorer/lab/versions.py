"""Versions of one kernel side by side, as llm.c's dev/cuda: each checked, each timed.

    compare_versions("matmul_forward", {"loops": "loops", "BLAS": "blas", "mine": my_matmul})

A version is a function or the name of a shipped variant (kernels.VARIANTS). The table
gives, per version: whether it passes check_kernel, its worst error, and ms per call on
the same inputs (cases.TIMING_SIZES), fastest first.
"""
import html
from dataclasses import dataclass

from .. import kernels
from .check import check_kernel


@dataclass
class VersionRow:
    label: str
    passed: bool
    worst_error: float
    ms: float
    report: object


class VersionTable:
    def __init__(self, name, rows):
        self.name, self.rows = name, sorted(rows, key=lambda r: (not r.passed, r.ms))

    def __getitem__(self, label):
        return next(r for r in self.rows if r.label == label)

    def _cells(self):
        fastest = min((r.ms for r in self.rows if r.passed), default=None)
        for r in self.rows:
            speed = f"{r.ms:.3g}" if r.ms == r.ms else "-"
            ratio = f"{r.ms / fastest:.1f}x" if fastest and r.ms == r.ms else "-"
            yield [r.label, "passes" if r.passed else "FAILS", f"{r.worst_error:.1e}", speed, ratio]

    def __str__(self):
        lines = [f"{self.name}: version, check, worst error, ms per call, vs fastest"]
        lines += ["  " + "  ".join(str(c) for c in row) for row in self._cells()]
        return "\n".join(lines)

    def _repr_html_(self):
        head = ["version", "check", "worst relative error", "ms per call", "vs fastest"]
        cells = "".join("<tr>" + "".join(f"<td style='padding:0 10px'>{html.escape(str(c))}</td>"
                                          for c in row) + "</tr>" for row in self._cells())
        sizes = self.rows[0].report.timing_sizes if self.rows else {}
        return (f"<b>{html.escape(self.name)}</b>, sizes "
                f"{html.escape(' '.join(f'{k}={v}' for k, v in sizes.items()))}"
                f"<table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{cells}</table>")


def compare_versions(name, versions):
    """Check and time every version of kernel `name`; returns a VersionTable."""
    rows = []
    for label, fn in versions.items():
        if isinstance(fn, str):
            options = kernels.VARIANTS.get(name, {})
            if fn not in options:
                raise KeyError(f"kernel {name!r} has no shipped variant {fn!r}; "
                               f"expected one of: {', '.join(options) or '(none)'}")
            fn = options[fn]
        report = check_kernel(name, fn)
        worst = report.worst()
        rows.append(VersionRow(label, report.passed, worst.max_rel if worst else float("nan"),
                               report.timings_ms.get("yours", float("nan")), report))
    return VersionTable(name, rows)
