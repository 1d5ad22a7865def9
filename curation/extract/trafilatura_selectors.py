"""trafilatura's attribute-only XPaths as Python tests over the elements (fix 7 of trafilatura_fix).

Seven XPaths of trafilatura 2.3.1 select elements by tag and attributes alone: the raw-tree prunes
(``RAW_TREE_PRUNE_XPATH``, ``REMOVE_COMMENTS_AND_LISTS_XPATH``), the boilerplate pass
(``OVERALL_DISCARD_XPATH``), captions, teasers, and the baseline's ``BASIC_CLEAN_XPATH``. libxml2
walks the tree once per expression, and every ``re:test`` calls back into Python through lxml's
EXSLT layer (a node-set built, converted, looked up): on the modern pages of `make bench-extract`
those seven took a quarter of trafilatura's time. The same tests written in Python, over
``iterdescendants`` of the tags they name, select the same elements in the same (document)
order at about a third of the cost.

XPath's meaning is kept where it is subtle:

- ``re:test(@a, p)`` is ``re.search(p, value)``, with the pattern compiled as lxml compiles it; a
  missing attribute tests the empty string, which none of these patterns match.
- ``@id|@class`` as a string is the value of whichever of the two comes first in the element
  (document order of attributes is their order in the source).
- ``.//*`` is the context's descendants (never the context itself), elements only.

``tests/test_extract.py`` checks, at every call trafilatura makes while extracting the sample's and
the gold set's pages, that each selector returns the very elements upstream's XPath returns, and
the same on generated trees whose elements have, or lack, every attribute these tests read.
"""

from __future__ import annotations

import re
from typing import Callable

from lxml import etree

_ELEMENTS = (etree.Element,)  # ``*``: elements only (no comments, no processing instructions)
_BLOCKS = ("div", "item", "list", "p", "section", "span")


class Selector:
    """Callable like an ``lxml.etree.XPath``: the elements below ``tree`` of ``tags`` that pass ``test``."""

    def __init__(self, path: str, tags: tuple, test: Callable[[etree._Element], bool]):
        self.path, self.tags, self.test = path, tags, test

    def __call__(self, tree) -> list:
        test = self.test
        if isinstance(tree, etree._ElementTree):  # the document node: the root element is below it
            return [e for e in tree.getroot().iter(*self.tags) if test(e)]
        return [e for e in tree.iterdescendants(*self.tags) if test(e)]

    def __repr__(self) -> str:
        return f"Selector({self.path.split()[0]!r}...)"


def _first(e, a: str, b: str) -> str:
    """The string value of ``@a|@b``: the one of the two that comes first in the element."""
    x, y = e.get(a), e.get(b)
    if x is None:
        return y or ""
    if y is None:
        return x
    for key in e.keys():
        if key == a:
            return x
        if key == b:
            return y
    return x  # pragma: no cover - both were found above


def _rx(pattern: str, ignore_case: bool = False):
    """``re:test``'s pattern, compiled as lxml's EXSLT layer compiles it; its ``search``."""
    return re.compile(pattern, re.UNICODE | (re.IGNORECASE if ignore_case else 0)).search


# --- RAW_TREE_PRUNE_XPATH
_MVP_OR_SCROLL = _rx("mvp-post-add-(?:box|wrap)|infinite-?scroll")
_MVP = _rx("mvp-post-add-(?:box|wrap)")


def _raw_prune(e) -> bool:
    i, c = e.get("id"), e.get("class")
    if not ((i and _MVP_OR_SCROLL(i)) or (c and _MVP_OR_SCROLL(c))):
        return False
    return next(e.iterdescendants("h1"), None) is None or bool((i and _MVP(i)) or (c and _MVP(c)))


def _share_buttons(e) -> bool:
    return "elementor-share-buttons" in (e.get("class") or "")


# --- REMOVE_COMMENTS_AND_LISTS_XPATH
_COMMENTS_ID = _rx("^(?:[Cc]omment(?!ary)|comol|disqus_thread|dsq-comments)")
_COMMENTS_CLASS = _rx("^[Cc]omment(?!ary)|(?:article|post)-comments")
_COMMENTS_LIST_ID = _rx("^(?:[Cc]omment(?!ary)|comol)")


def _comments_and_lists(e) -> bool:
    i, c = e.get("id"), e.get("class")
    if not ((i and _COMMENTS_ID(i)) or (c and _COMMENTS_CLASS(c))):
        return False
    return e.tag not in ("ol", "ul") or bool((i and _COMMENTS_LIST_ID(i)) or (c and _COMMENTS_CLASS(c)))


# --- OVERALL_DISCARD_XPATH
_COOKIE = _rx("cookie")
_DISCARD_ID = _rx(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|^(?:jp-|dpsp-content)|bmdh"
    "|footer|Footer|share|Share|nav|Nav|menu|related|message-container|premium|^ad-")
_DISCARD_CLASS = _rx(
    "^shar|social|viral|newsletter|syndication|tags|sidebar|banner|bread-?crumb|button|author|^(?:nav|post-nav|ZendeskForm)"
    "|subnav|avigation|navbar|navbox|menu|bar| ad |-ad-|(?:^| )ad-|dfp[Aa]d|outbrain|taboola|criteo|paid-?content|widget"
    "|footer|Footer|byline|Byline|share-|sociable|embedded|embed|tag-list|consent|modal-content|permission|elated|next-"
    "|-stories|most-popular|more-on|meta|rating|attachment|timestamp|user-info|user-profile|-icon|article-infos"
    "|message-container|slide|viewport|overlay|options|expand|obfuscated|blurred|mol-factbox|yin|zlylin|nfoline")
_HIDDEN = _rx("hidden")
_COMMENT_PLUGINS = _rx("reader-comments|akismet")
_HIDDEN_CLASS = _rx(
    "^hide-|comments-title|nocomments|-reply-|message|akismet|suggest-links|-hide-|hide-print| hidden| hide|noprint|notloaded")


def _overall_discard(e) -> bool:
    get = e.get
    if get("data-lp-replacement-content") is not None or "nav" in (get("role") or "").replace("N", "n"):
        return True
    if "MostPopularStories" in (get("data-component") or ""):
        return True
    i, c = get("id"), get("class")
    if i is None and c is None:
        return False
    return bool(_COOKIE(_first(e, "id", "class")) or (i and _DISCARD_ID(i)) or (c and _DISCARD_CLASS(c)))


def _overall_discard_hidden(e) -> bool:
    get = e.get
    i, c, s = get("id"), get("class"), get("style")
    if c == "comments-title" or get("aria-hidden") == "true":
        return True
    if (i is not None or c is not None) and _first(e, "id", "class").startswith("reply-"):
        return True
    if (i is not None or s is not None) and _HIDDEN(_first(e, "id", "style")):
        return True
    if s and ("display:none" in s or "display: none" in s):
        return True
    return bool((i and _COMMENT_PLUGINS(i)) or (c and _HIDDEN_CLASS(c)))


# --- DISCARD_IMAGE_ELEMENTS, TEASER_DISCARD_XPATH
def _caption(e) -> bool:
    return "caption" in (e.get("id") or "") or "caption" in (e.get("class") or "")


def _teaser(e) -> bool:
    return "teaser" in (e.get("id") or "").replace("T", "t") or "teaser" in (e.get("class") or "").replace("T", "t")


# --- baseline.BASIC_CLEAN_XPATH
_REMOVED = frozenset(("aside", "fencedframe", "footer", "script", "style", "svg", "template"))


def basic_clean(cookie_consent_re: str) -> Callable[[etree._Element], bool]:
    consent = _rx(cookie_consent_re, ignore_case=True)

    def test(e) -> bool:
        tag = e.tag
        if tag in _REMOVED:
            return True
        i, c = e.get("id"), e.get("class")
        if i is None and c is None:
            return False
        if tag == "div" and "footer" in _first(e, "class", "id"):
            return True
        return bool((c and consent(c)) or (i and consent(i)))

    return test


# The xpaths list entries each test stands for, by list name and position.
XPATHS_TESTS: dict[tuple[str, int], tuple[tuple, Callable]] = {
    ("RAW_TREE_PRUNE_XPATH", 0): (("div", "section", "aside"), _raw_prune),
    ("RAW_TREE_PRUNE_XPATH", 1): (("div", "section", "aside"), _share_buttons),
    ("REMOVE_COMMENTS_AND_LISTS_XPATH", 0): (("div", "list", "section", "details", "ol", "ul"), _comments_and_lists),
    ("OVERALL_DISCARD_XPATH", 0): (_BLOCKS, _overall_discard),
    ("OVERALL_DISCARD_XPATH", 1): (_ELEMENTS, _overall_discard_hidden),
    ("DISCARD_IMAGE_ELEMENTS", 0): (_BLOCKS, _caption),
    ("TEASER_DISCARD_XPATH", 0): (_BLOCKS, _teaser),
}
