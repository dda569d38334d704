"""Radiology report text: which findings a report states (``findings``) and how close a written report
is to a reference (``scores``)."""
