"""Taskiq tasks (email sending) and the broker they run on."""
