"""Evidence: what a host shows, asked in one round trip and read into values a playbook can use.

framework (Context, Collector, Log, the log helpers) → one module per cause or evidence family
(routing, window, socket, down, proxy_pass, timeout, dns, response, workers, hardening) → registry
(every collector by name; ask, then read) → classify (error-log lines → cause labels).
"""
