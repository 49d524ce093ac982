"""Named sites on a model's tensors and the hooks that record them (alive only inside context managers)."""

from dardiag.hooks.sites import Site, SiteLayout, site_names

__all__ = ["Site", "SiteLayout", "site_names"]
