"""Studies: one config -> every analysis for a Base -> IN -> RL triple -> one report."""
