"""Shared internals used by every pillar: checks, dtypes, dispatch, blockwise maps, sharding.

Nothing here is public API; pillars import from these modules so that an error message, a dtype
rule or a blocking strategy is written once.
"""
