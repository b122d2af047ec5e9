"""The sending policy: quiet hours, opt-outs, per-recipient pacing, duplicates, segments."""
