"""Campaign configuration: the typed schema of the YAML file and its loader (the only place YAML is read)."""

from twin.config.loader import LoadedCampaign, load_campaign

__all__ = ["LoadedCampaign", "load_campaign"]
