"""Export: strip heads → ONNX → TFLite, with parity checked at every stage."""

from mobiledepth.export.pipeline import DEFAULT_PRECISIONS, PRECISIONS, ExportResult, export_model, parse_precisions

__all__ = ["DEFAULT_PRECISIONS", "PRECISIONS", "ExportResult", "export_model", "parse_precisions"]
