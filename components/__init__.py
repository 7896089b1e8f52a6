"""Reusable KFP components, one folder per component: ``<category>/<name>/component.py``."""
