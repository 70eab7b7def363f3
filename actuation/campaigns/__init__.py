"""Collection campaigns, control side: create, list and stop the campaigns a fleet's devices follow.

A campaign (:class:`actuation.contract.Campaign`) is signed into the fleet's role as
``<fleet>/campaigns.json`` (:class:`~actuation.campaigns.book.CampaignBook`), a new targets
version beside the release pointer, which stays as it is; the device side is
:mod:`actuation.agent.campaigns`. ``fieldloop campaign create|list|stop`` is :mod:`.cli`.
"""

from actuation.campaigns.book import CampaignBook, campaign_row, campaign_state, parse_duration

__all__ = ["CampaignBook", "campaign_row", "campaign_state", "parse_duration"]
