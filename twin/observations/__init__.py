"""Observation operators, observation sets and files, quality control."""
