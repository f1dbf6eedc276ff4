"""Offline tools: generation runs on disk, contact sheets, procedural demo surfaces."""
