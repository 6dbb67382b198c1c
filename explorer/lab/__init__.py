"""The kernel lab: write a kernel, check it against the reference, swap it in, retrain.

    from explorer.lab import check_kernel, KernelLab
    report = check_kernel("gelu_forward", my_gelu_forward)   # never raises for a bad kernel
    print(report)                                            # or just show it in a notebook
    lab = KernelLab("reverse-tiny")
    run = lab.retrain("gelu_forward", my_gelu_forward)       # same model, same seed, your kernel

See check.py for what is checked and sandbox.py for why a crash or an endless loop in a
student's kernel costs an error message, not the notebook.
"""
from .check import TOLERANCE, check_kernel
from .compile import fresh_compile
from .report import KernelReport, OutputCheck
from .retrain import KernelLab, RetrainRun, only_shipped_except
from .sandbox import Sandbox
from .versions import VersionTable, compare_versions

__all__ = ["check_kernel", "fresh_compile", "KernelLab", "KernelReport", "OutputCheck", "RetrainRun",
           "Sandbox", "TOLERANCE", "VersionTable", "compare_versions", "only_shipped_except"]
