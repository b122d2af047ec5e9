"""Delivery reports: Wiraya's delivery reports received, stored and matched to their messages."""
