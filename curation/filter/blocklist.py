"""URL blocklist: a user's list of domains; a listed domain also blocks all its subdomains.

The file holds one domain per line; blank lines and ``#`` comments are ignored, as are a leading
scheme, ``www.`` and a trailing path, so lines copied from a browser work. Matching walks the
host's suffixes (``a.b.example.com`` -> ``b.example.com`` -> ``example.com``), a few set lookups
per URL whatever the size of the list.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def parse_blocklist(text: str) -> frozenset[str]:
    domains = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if not line:
            continue
        if "://" in line:
            line = line.split("://", 1)[1]
        line = line.split("/", 1)[0].split(":", 1)[0].strip(".")
        if line.startswith("www."):
            line = line[4:]
        if line:
            domains.add(line)
    return frozenset(domains)


def url_host(url: str | None) -> str:
    if not url:
        return ""
    url = url.strip().strip("<>")
    try:
        host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
    except ValueError:
        return ""
    return host.lower().strip(".")


def is_blocked(url: str | None, domains: frozenset[str]) -> bool:
    """True if the URL's host is a listed domain or a subdomain of one."""
    if not domains:
        return False
    host = url_host(url)
    while host:
        if host in domains:
            return True
        dot = host.find(".")
        if dot < 0:
            return False
        host = host[dot + 1 :]
    return False
