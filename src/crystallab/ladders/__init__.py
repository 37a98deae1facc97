"""Preset ladders (YAML), read by crystallab.ladder."""
