"""Two fixes to trafilatura's speed that leave its output unchanged.

1. A quadratic slowdown in ``tree_cleaning`` on nested layout tables.

Where the time went (``make bench-extract``, profiled): three 0.5-1.2 MB archive.org forum pages
took 4.75 of the 7.27 s trafilatura spent on the sample WARCs, nearly all of it in
``tree_cleaning``. It deletes unwanted elements with::

    for element in tree.iter(expression):
        delete_element(element)

lxml's iterator finds the next match before it hands out the current one. When the deleted
element holds another element of the same tag (a layout ``<td>`` around a table of 21,000 cells),
that next match lies inside the subtree just cut off, so the loop carries on deleting inside a
detached fragment: that changes nothing in the document, and the loop then stops (the
fragment's top has no parent), leaving later matches in the document alone. Inside a detached
fragment lxml frees each dropped proxy only after scanning the fragment for other proxies, so
the wasted deletions cost O(fragment size) each: quadratic, about 1 s per call on such a page,
and trafilatura calls it twice.

The replacement below is upstream's function with one change: after deleting an element that
holds a match, the loop ends, as upstream's does once it leaves the fragment. Every deletion
that reaches the document is the same, in the same order, so the extracted text is identical
(``tests/test_extract.py`` compares the text of every sample page, and the cleaned trees of
generated pages where tags nest in themselves).

2. ``baseline.basic_cleaning`` (the baseline and the page-text measure, both run on every page
whose first extraction comes out short) selects cookie banners with an XPath that calls two
EXSLT regular expressions, in Python, on every element of the page: 0.98 s over the sample's
pages. The same expression that first keeps only elements with a class or id (the pattern cannot
match the empty string that a missing attribute gives) selects the same elements in 0.27 s.

Each fix is installed only over the exact upstream code it was written against (a hash of the
function's source, the XPath's text); any other trafilatura version runs unpatched.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from copy import deepcopy

# sha256 of trafilatura 2.3.1's htmlprocessing.tree_cleaning source, the function replaced here.
_UPSTREAM_SHA256 = "828e83a7393082def65c10022aa7cf43d0debfb0039e1de8ee8c9ecb2d23b903"
_installed: bool | None = None
_saved: list[tuple[object, str, object]] = []


def tree_cleaning(tree, options):
    "Prune the tree by discarding unwanted elements."
    from lxml.etree import strip_tags
    from trafilatura.htmlprocessing import PRESERVE_IMG_CLEANING, _handle_forms, prune_html, recover_math
    from trafilatura.settings import MANUALLY_CLEANED, MANUALLY_STRIPPED
    from trafilatura.xml import delete_element

    recover_math(tree)
    cleaning_list, stripping_list = MANUALLY_CLEANED.copy(), MANUALLY_STRIPPED.copy()
    clean_forms = "form" in cleaning_list
    if clean_forms:
        cleaning_list.remove("form")
    if not options.tables:
        cleaning_list.extend(["table", "td", "th", "tr"])
    else:
        for elem in tree.iter("figure", "table"):
            if elem.find(".//table") is not None if elem.tag == "figure" else elem.get("role") in ("presentation", "none"):
                elem.tag = "div"
    if options.images:
        cleaning_list = [e for e in cleaning_list if e not in PRESERVE_IMG_CLEANING]
        stripping_list.remove("img")

    strip_tags(tree, stripping_list)

    tcopy = None
    if (
        options.focus == "recall"
        and tree.find(".//p") is not None
        and ("p" in cleaning_list or not any(next(p.iterancestors(cleaning_list), tree) is tree for p in tree.iter("p")))
    ):
        tcopy = deepcopy(tree)
    for expression in cleaning_list:
        for element in tree.iter(expression):
            # The one change: upstream's loop goes on inside the detached subtree (see above).
            cut_off = element.getparent() is not None and next(element.iterdescendants(expression), None) is not None
            delete_element(element)
            if cut_off:
                break
    if tcopy is not None and tree.find(".//p") is None:
        tree = tcopy

    if clean_forms:
        _handle_forms(tree)

    return prune_html(tree, options.focus)


def _basic_clean_xpath(prefilter: bool) -> str:
    from trafilatura.settings import _COOKIE_CONSENT_RE

    return (
        ".//aside|.//div[contains(@class|@id, 'footer')]|.//fencedframe|.//footer|.//script|.//style|.//svg|.//template"
        f"|.//*{'[@class or @id]' if prefilter else ''}"
        f"[re:test(@class, '{_COOKIE_CONSENT_RE}', 'i') or re:test(@id, '{_COOKIE_CONSENT_RE}', 'i')]"
    )


def install() -> bool:
    """Put both fixes in place; True if both went in (each only over the code it was written for)."""
    global _installed
    if _installed is None:
        from lxml.etree import XPath
        from trafilatura import core, external, htmlprocessing

        baseline = importlib.import_module("trafilatura.baseline")  # the package re-exports a function of that name
        source = inspect.getsource(htmlprocessing.tree_cleaning)
        cleaning = hashlib.sha256(source.encode()).hexdigest() == _UPSTREAM_SHA256
        if cleaning:
            for module in (htmlprocessing, core, external):
                _saved.append((module, "tree_cleaning", module.tree_cleaning))
                module.tree_cleaning = tree_cleaning
        xpath = baseline.BASIC_CLEAN_XPATH.path == _basic_clean_xpath(prefilter=False)
        if xpath:
            _saved.append((baseline, "BASIC_CLEAN_XPATH", baseline.BASIC_CLEAN_XPATH))
            baseline.BASIC_CLEAN_XPATH = XPath(_basic_clean_xpath(prefilter=True), namespaces={"re": "http://exslt.org/regular-expressions"})
        _installed = cleaning and xpath
    return _installed


def installed() -> bool:
    """Whether the fixes are in place in this process now."""
    return bool(_installed)


def uninstall() -> None:
    """Put trafilatura's own code back (tests compare the two)."""
    global _installed
    while _saved:
        module, name, value = _saved.pop()
        setattr(module, name, value)
    _installed = None
