"""The catalog file: the shipped example, reading it and validating it into the domain's
Catalog (`service.domain.catalog`)."""

from service.catalog.loader import EXAMPLE_CATALOG, load_catalog
from service.catalog.parser import CatalogError, parse_catalog

__all__ = ["EXAMPLE_CATALOG", "CatalogError", "load_catalog", "parse_catalog"]
