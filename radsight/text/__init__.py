"""Radiology report text: which findings a report states (``findings``), how close a written report is
to a reference (``scores``), and how well the finding extractor agrees with coders (``agreement``)."""
