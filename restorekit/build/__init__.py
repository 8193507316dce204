"""The one build pipeline: prepare -> quantize -> convert -> validate -> bundle + report."""
