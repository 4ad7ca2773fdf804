"""Where instances come from: local (simulated Spot market) and aws (arrive with later issues)."""
