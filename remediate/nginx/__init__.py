"""The nginx config model: lexer → parser → config (include graph) → match (routing) → edit (patches)."""

from remediate.nginx.config import NginxConfig, Pass, split_dump
from remediate.nginx.edit import MARKER, Patch, apply_patches
from remediate.nginx.match import find_location, find_server, route
from remediate.nginx.parser import ConfigFile, Directive, dump, parse

__all__ = [
    "MARKER",
    "ConfigFile",
    "Directive",
    "NginxConfig",
    "Pass",
    "Patch",
    "apply_patches",
    "dump",
    "find_location",
    "find_server",
    "parse",
    "route",
    "split_dump",
]
