"""The simulated Spot market and the pure decisions made on it.

    catalog        real EC2 instance types: vCPU, memory, us-east-1 on-demand price; zones
    config         MarketConfig (`providers.local.market`), pydantic only
    prices         Spot price per type+zone: seeded mean-reverting model, replayed trace, overrides
    interruptions  Spot Instance Advisor buckets -> hazards; co-interruptions; time_scale
    model          Market: offers, prices, quarantines, interruption draws, snapshot
    policy         pure placement / recovery / cost-migration / rightsizing decisions
    costs          cost accounting per attempt and task

Kept free of imports so that gateway.config can import gateway.market.config cheaply.
"""
