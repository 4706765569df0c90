"""Domain services: plain async functions with keyword-only arguments.

REST views, Socket.IO handlers and the event consumers all call these; none of them holds
domain logic of its own.
"""
