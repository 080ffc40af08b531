"""A small sign-up app that shows hostedjobs: see demo_app/main.py."""
