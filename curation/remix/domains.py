"""Domain of a document: URL patterns first, then keyword rules, else "other".

Why rules and not a topic model: nothing may be downloaded, no labelled topic data ships with the
project, and a mapping a user can read and edit in the config (hosts and path shapes they know,
keywords in both English and Chinese) is easy to audit. URL patterns are precise where they match
(wikipedia.org is an encyclopedia); keyword rules catch the rest (a blog post full of code).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curation.remix.config import DomainRule, RemixConfig

OTHER = "other"


@dataclass
class _Compiled:
    name: str
    url: re.Pattern | None
    keywords: re.Pattern | None
    min_hits: int


class DomainAssigner:
    def __init__(self, cfg: RemixConfig):
        self._rules = [self._compile(r) for r in cfg.domains]
        self._chars = cfg.keyword_chars
        self.names = [r.name for r in cfg.domains] + [OTHER]

    @staticmethod
    def _compile(rule: DomainRule) -> _Compiled:
        url = re.compile("|".join(f"(?:{p})" for p in rule.url_patterns)) if rule.url_patterns else None
        kw = re.compile("|".join(re.escape(k.lower()) for k in rule.keywords)) if rule.keywords else None
        return _Compiled(rule.name, url, kw, rule.min_keyword_hits)

    def __call__(self, url: str | None, text: str, title: str | None = None) -> str:
        u = _normal_url(url)
        if u:
            for r in self._rules:
                if r.url is not None and r.url.search(u):
                    return r.name
        head = ((title or "") + "\n" + text[: self._chars]).lower()
        for r in self._rules:
            if r.keywords is not None and len(r.keywords.findall(head)) >= r.min_hits:
                return r.name
        return OTHER


def _normal_url(url: str | None) -> str:
    if not url:
        return ""
    u = url.strip().strip("<>").lower()
    u = u.split("://", 1)[1] if "://" in u else u
    return u[4:] if u.startswith("www.") else u
