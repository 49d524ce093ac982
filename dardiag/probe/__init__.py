"""Probe sites and recording (hooks live only inside context managers)."""

from dardiag.probe.sites import Site, SiteLayout, site_names

__all__ = ["Site", "SiteLayout", "site_names"]
