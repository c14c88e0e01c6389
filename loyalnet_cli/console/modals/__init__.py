"""Screens over the console: details, confirmations and forms; Escape closes each."""
