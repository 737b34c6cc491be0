"""The run report: one self-contained HTML file (RUN/report.html) with the study's figures and more.

Public API: :func:`build_report`. Importing it is cheap; matplotlib and pandas load only while building.
"""
from pintopic.report.build import build_report

__all__ = ["build_report"]
