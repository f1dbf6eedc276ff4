"""Offline tools: generation runs on disk, exports of their banks, contact sheets, procedural demo surfaces."""
