"""The demo's data.

Pinned sources read into pools, split without near-copies, written as JSONL and suite files.
"""
