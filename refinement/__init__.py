"""Refinement: bronze -> silver -> gold Spark jobs.

Privacy policies, keyed pseudonyms, k-anonymity, quality expectations and DP aggregates
live here (issue: refinement). Nothing is built yet.
"""
