"""Clinical integration: results as DICOM objects (out), a DICOMweb client (pacs), a DIMSE node (node)."""
