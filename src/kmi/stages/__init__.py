"""Pipeline stages: plain typed functions, no doit; tasks.py adapts them."""
