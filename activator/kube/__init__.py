"""The activator's Kubernetes client layer: configuration, a thin aiohttp API client,
list-then-watch reflectors and the projections of the objects the activator reads.

Nothing outside ``activator`` imports this package; the queue-proxy never does.
"""
