"""Radiology report text: cleaning a report (``clean``), its BPE tokenizer (``tokenizer``), decoding a
report from a model (``decoding``), which findings a report states (``findings``), how close a written
report is to a reference (``scores``), and how well the finding extractor agrees with coders
(``agreement``)."""
