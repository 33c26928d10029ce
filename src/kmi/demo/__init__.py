"""A local stand-in for the internet: a mirror server and upstream layouts (tests, demo)."""
