"""One module per vendor; importing this package registers every target."""

from crmframes.vendors import dengage, dotdigital, qualtrics

__all__ = ["dengage", "dotdigital", "qualtrics"]
