"""Layer 2, the transports that carry jobs to workers: our Upstash Redis queue (`upstash`) and
RunPod's serverless endpoint API (`runpod`). See docs/architecture.md.
"""
