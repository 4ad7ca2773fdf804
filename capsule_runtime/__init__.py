"""The worker agent that runs on each instance: containers, capsules, staging.

It never imports Flask: a worker installs without the gateway's server dependencies.
"""
