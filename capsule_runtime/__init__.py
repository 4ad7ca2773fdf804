"""The worker agent that runs on each instance: containers, capsules, staging. Never imports Flask."""
