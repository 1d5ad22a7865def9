"""Nine fixes to trafilatura's speed that leave its output unchanged.

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
EXSLT regular expressions, in Python, on every element of the page. Over the sample's 152
pages, once each: 1.37 s; first keeping only elements with a class or id (this fix before): 0.52
s; now one of fix 7's Python tests: 0.29 s.

3. The same waste in every other XPath of ``trafilatura.xpaths`` (boilerplate, comments, body,
metadata): ``re:test(@class, '...')`` calls Python's ``re`` for every candidate element, also
where the attribute is missing and the test can only be false (``re:test`` of an empty node-set
tests the empty string, which none of these patterns match). Each such test becomes
``((@class) and re:test(@class, '...'))``: XPath's ``and`` skips the right side when the left is
false, so every expression selects the same elements, without the call. On the 242 modern pages
of ``make bench-extract`` (gold set + sample pages not from archive.org) trafilatura with the
stage's options then takes about 0.88x the CPU, with identical text.

4. lxml.html's parser picks each element's Python class (``FormElement`` for ``<form>``, ...)
through ``HtmlElementClassLookup.lookup``, a Python method called for every element proxy lxml
creates: 400,000 calls, 8% of trafilatura's time on those pages. The same tag-to-class table in
lxml's C-level ``ElementNamespaceClassLookup`` gives every element the same class without the
call (tags from lxml's HTML parser are lower case, as the table's keys are), 0.8x the CPU.

5. ``prune_unwanted_nodes(..., with_backup=True)`` (the boilerplate pass of every extraction)
keeps only the matches that no other match contains, testing each match's ancestors one by one
in Python: a proxy object per ancestor, per match. Here the matches are marked with an attribute
of our own (where no element of the document has one already), a single XPath finds the marked
elements that have a marked ancestor, and the marks go again: the same elements, in the same
order, pruned the same way.

6. In fast mode without comments, ``core._prepare_tree`` copies the cleaned tree as a backup for
the external extractors' comparison and the forum-comments path, which fast mode and comments
off never take: the copy (a whole tree) is skipped there, nothing else changes.

7. Seven of those XPaths (the raw-tree prunes, the boilerplate pass, captions, teasers, and the
baseline's of fix 2) test only an element's tag and attributes. Each is written as a Python test
over the elements of its tags (``curation/extract/trafilatura_selectors.py``): the same elements
in the same order, without libxml2's walk per expression and lxml's Python callback per
``re:test``. On the 242 modern pages trafilatura with the stage's options then takes 0.80x the
CPU (5.53 to 4.43 s), with identical text.

8. The recall escalation measures the page's text with ``baseline.html2txt(tree)``: it copies the
whole tree, deletes what ``BASIC_CLEAN_XPATH`` selects, re-sets the text and tail of every block
element to a space and its printable characters, and joins the text. ``html2txt`` here walks the
tree once and builds the same string, skipping the cleaned elements (their tails join the text
before them, as ``delete_element`` puts them) and spacing the blocks' texts as upstream does: 1.9x
less CPU on the 242 modern pages' trees, where half the pages take that measure.

9. ``utils.repair_faulty_html`` first removes XML-invalid characters with a regular expression
over the whole page, about 1.3 ms per page here, though hardly any page has one. A page's UTF-8
bytes show in C whether it has any (the control characters are single bytes there, never part of
another character; U+FFFE and U+FFFF have fixed three bytes): where none, the rest of upstream's
function runs on the page as it is, about 0.8 ms for the check; otherwise upstream's own function.

Each fix is installed only over the exact upstream code it was written against (a hash of the
function's source, the XPath's text, the module's source); any other trafilatura or lxml
version runs unpatched.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from copy import deepcopy

# sha256 of trafilatura 2.3.1's htmlprocessing.tree_cleaning source, the function replaced here.
_UPSTREAM_SHA256 = "828e83a7393082def65c10022aa7cf43d0debfb0039e1de8ee8c9ecb2d23b903"
# sha256 of trafilatura 2.3.1's xpaths module source (fix 3) and of lxml 6.1's
# HtmlElementClassLookup + lxml.html.HTMLParser sources (fix 4).
_XPATHS_SHA256 = "702853cb6b2784e4dabf79af564c61affddfe5e62090660eee7125822208841e"
_LOOKUP_SHA256 = "d52d24f40cb553eeb7989d3b68218648c4c575bfda7c48e59a0348aba9908a48"
# ... of htmlprocessing.prune_unwanted_nodes (fix 5), and of core's _prepare_tree with the three
# functions that use its backup (fix 6).
_PRUNE_SHA256 = "4731f8e24ef86449c2714a6257d2ff892ff12a6a3d544d7ca87d6536fab29915"
_PREPARE_SHA256 = "522d8031d3ea92f415e9343c315c414b9dda13d9dbee7cb356c0b322a9d432eb"
# ... of the trafilatura.baseline module (fix 8: html2txt, _spaced_text, basic_cleaning, _BLOCK_ELEMS).
_BASELINE_SHA256 = "d24c746c809b8b1a9d54403c3046d12c25906b3c46db783bf739b05b1989f30c"
# ... of utils.repair_faulty_html (fix 9).
_REPAIR_SHA256 = "7e68c7a3cb24910c519778bfa3b7132efbdb6e650e79f1fe66905e962d6e1d69"
_MARK = "data-curation-trafilatura-fix"
_REGEXP_NS = "http://exslt.org/regular-expressions"
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


_INNER_MATCHES = None


def prune_unwanted_nodes(tree, nodelist, with_backup: bool = False):
    "Prune the HTML tree by removing unwanted sections."
    from trafilatura.xml import delete_element

    global _INNER_MATCHES
    if not with_backup:
        for expression in nodelist:
            for subtree in expression(tree):
                delete_element(subtree)  # the tail text is preserved
        return tree
    # guard: prune nothing if it would remove too much text, the tree keeps its elements
    matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))
    # The one change: which matches lie inside another match, found by one XPath over marks
    # instead of walking every match's ancestors in Python (see above). A document that already
    # has the mark attribute anywhere takes upstream's way.
    if _INNER_MATCHES is None:
        from lxml.etree import XPath

        _INNER_MATCHES = (XPath(f"boolean(//@{_MARK})"), XPath(f".//*[@{_MARK}][ancestor::*[@{_MARK}]]"))
    marked, inner_matches = _INNER_MATCHES
    if matches and not marked(tree):
        for elem in matches:
            elem.set(_MARK, "")
        try:
            inner = set(inner_matches(tree))
        finally:
            for elem in matches:
                del elem.attrib[_MARK]
        outer = [elem for elem in matches if elem not in inner]
    else:
        outer = [elem for elem in matches if not any(a in matches for a in elem.iterancestors())]
    old_len = len(tree.text_content())
    # todo: adjust for recall and precision settings
    if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:
        for elem in outer:
            delete_element(elem)
    return tree


def _prepare_tree(tree, options, url):
    "Clean and convert a raw tree, returning (converted, pre-conversion backup)."
    from trafilatura import core

    cleaned = core.tree_cleaning(core.copy(tree), options)
    # The one change: no backup where nothing reads it (fast mode, comments off).
    backup = core.copy(cleaned) if not options.fast or options.comments else None
    cleaned = core.convert_tags(cleaned, options, url)
    return cleaned, backup


def html2txt(content, clean: bool = True) -> str:
    """``baseline.html2txt`` (the page-text measure of the recall escalation) of a parsed tree, in
    one walk over it: the same string, without copying the tree, deleting the cleaned elements and
    re-spacing every block element's text (fix 8). Anything else goes to upstream's function."""
    from lxml.html import HtmlElement
    from trafilatura.utils import remove_control_characters as printable

    if not clean or not isinstance(content, HtmlElement):
        return _upstream_html2txt(content, clean)
    baseline = importlib.import_module("trafilatura.baseline")  # the package re-exports a function of that name
    body = content.find(".//body")
    if body is None:
        body = content
    removed, blocks = baseline.BASIC_CLEAN_XPATH.test, baseline._BLOCK_ELEMS
    out: list[str] = []

    def flush(text: str | None, block: bool) -> None:
        # upstream: a block element's text and tail become " " + their printable characters and
        # spaces, which is the text itself where every character that is not printable is a space
        if block:
            out.append((f" {text}" if "".join(text.split()).isprintable() else f" {printable(text)}") if text else " ")
        elif text:
            out.append(text)

    # Depth first with a stack of (element, its children, the text waiting for the next
    # survivor: the element's text or the last child's tail, and whether that belongs to a block).
    stack = [(body, iter(body), body.text, body.tag in blocks)]
    while stack:
        elem, children, text, block = stack[-1]
        for child in children:
            if not isinstance(child.tag, str):  # a comment or processing instruction: never cut
                flush(text, block)
                text, block = child.tail, False
                continue
            if removed(child):  # cut with its subtree, its tail joins the text before it
                if child.tail:
                    text = (text or "") + child.tail
                continue
            flush(text, block)
            stack[-1] = (elem, children, child.tail, child.tag in blocks)
            stack.append((child, iter(child), child.text, child.tag in blocks))
            break
        else:
            flush(text, block)
            stack.pop()
    return " ".join("".join(out).split())


def _upstream_html2txt(content, clean: bool = True) -> str:
    from trafilatura.baseline import html2txt as upstream

    return upstream(content, clean)


# The bytes of the control characters INVALID_XML_CHARS removes; in UTF-8 they are never part of
# another character. Its two other characters, U+FFFE and U+FFFF, are these three bytes each.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_INVALID_XML_CHARS = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ufffe\\uffff]"


def repair_faulty_html(htmlstring: str, beginning: str) -> str:
    """``utils.repair_faulty_html``, whose first step removes XML-invalid characters with a regular
    expression over the whole page; a page without any (nearly all) is found so in C, by its UTF-8
    bytes, and goes to the rest of upstream's function unchanged (fix 9)."""
    data = htmlstring.encode("utf-8", "surrogatepass")
    if len(data.translate(None, _CONTROL_BYTES)) == len(data) and b"\xef\xbf\xbe" not in data and b"\xef\xbf\xbf" not in data:
        return _repair_rest(htmlstring, beginning)
    return _upstream_repair(htmlstring, beginning)


_upstream_repair = None


def _repair_rest(htmlstring: str, beginning: str) -> str:
    """Upstream's repair_faulty_html after its first line (the string has no invalid character)."""
    from trafilatura.utils import DOCTYPE_TAG, FAULTY_HTML

    # libxml2/LXML issue: https://bugs.launchpad.net/lxml/+bug/1955915
    if "doctype" in beginning:
        firstline, _, rest = htmlstring.partition("\n")
        htmlstring = DOCTYPE_TAG.sub("", firstline, count=1) + "\n" + rest
    # self-closing <html/> in the first lines
    for line in htmlstring[:4096].splitlines()[:4]:
        if "<html" in line and line.endswith("/>"):
            htmlstring = FAULTY_HTML.sub(r"\1>", htmlstring, count=1)
            break
    return htmlstring


def _basic_clean_xpath() -> str:
    """baseline.BASIC_CLEAN_XPATH's text in trafilatura 2.3.1 (fix 7 replaces exactly that)."""
    from trafilatura.settings import _COOKIE_CONSENT_RE

    return (
        ".//aside|.//div[contains(@class|@id, 'footer')]|.//fencedframe|.//footer|.//script|.//style|.//svg|.//template"
        f"|.//*[re:test(@class, '{_COOKIE_CONSENT_RE}', 'i') or re:test(@id, '{_COOKIE_CONSENT_RE}', 'i')]"
    )


_RE_TEST = re.compile(r"re:test\(\s*(@[\w-]+(?:\s*\|\s*@[\w-]+)*)\s*,\s*'([^']*)'\s*(?:,\s*'([^']*)'\s*)?\)")


def guard_regex_tests(path: str) -> str:
    """The XPath with each ``re:test(@a|@b, 'p')`` whose pattern cannot match the empty string
    guarded by ``(@a or @b) and``: the same selection, without calling Python where the
    attributes are missing."""

    def guarded(m: re.Match) -> str:
        attributes, pattern, flags = [a.strip() for a in m.group(1).split("|")], m.group(2), m.group(3) or ""
        if re.search(pattern, "", re.I if "i" in flags else 0) is not None:
            return m.group(0)  # the empty string matches: a missing attribute can pass the test
        return f"(({' or '.join(attributes)}) and {m.group(0)})"

    return _RE_TEST.sub(guarded, path)


def _faster(name: str, index: int, x):
    """Entry ``index`` of the xpaths list ``name``: its Python test (fix 7), else guarded (fix 3)."""
    from lxml.etree import XPath

    from curation.extract import trafilatura_selectors as selectors

    if (name, index) in selectors.XPATHS_TESTS:
        tags, test = selectors.XPATHS_TESTS[name, index]
        return selectors.Selector(x.path, tags, test)
    return XPath(guard_regex_tests(x.path), namespaces={"re": _REGEXP_NS}) if "re:test" in x.path else x


def _sha256(*objects: object) -> str:
    return hashlib.sha256("".join(inspect.getsource(o) for o in objects).encode()).hexdigest()  # type: ignore[arg-type]


def _html_class_lookup():
    """lxml.html's tag -> element class table as a C-level lookup (fix 4)."""
    from lxml import etree, html

    lookup = etree.ElementNamespaceClassLookup(etree.ElementDefaultClassLookup(
        element=html.HtmlElement, comment=html.HtmlComment, pi=html.HtmlProcessingInstruction, entity=html.HtmlEntity))
    classes = lookup.get_namespace(None)
    for tag, cls in html.HtmlElementClassLookup._default_element_classes.items():
        classes[tag] = cls
    return lookup


def install() -> bool:
    """Put every fix in place; True if all went in (each only over the code it was written for)."""
    global _installed
    if _installed is None:
        from lxml import html as lxml_html
        from lxml.etree import XPath
        from trafilatura import core, external, htmlprocessing, utils, xpaths

        baseline = importlib.import_module("trafilatura.baseline")  # the package re-exports a function of that name
        cleaning = _sha256(htmlprocessing.tree_cleaning) == _UPSTREAM_SHA256
        if cleaning:
            for module in (htmlprocessing, core, external):
                _saved.append((module, "tree_cleaning", module.tree_cleaning))
                module.tree_cleaning = tree_cleaning
        from curation.extract import trafilatura_selectors as selectors

        xpath = baseline.BASIC_CLEAN_XPATH.path == _basic_clean_xpath()
        if xpath:
            from trafilatura.settings import _COOKIE_CONSENT_RE

            _saved.append((baseline, "BASIC_CLEAN_XPATH", baseline.BASIC_CLEAN_XPATH))
            baseline.BASIC_CLEAN_XPATH = selectors.Selector(baseline.BASIC_CLEAN_XPATH.path, selectors._ELEMENTS,
                                                            selectors.basic_clean(_COOKIE_CONSENT_RE))
        guards = _sha256(xpaths) == _XPATHS_SHA256
        if guards:
            # The lists are changed in place: every trafilatura module holds the same list objects.
            for name, value in sorted(vars(xpaths).items()):
                if isinstance(value, list) and value and all(isinstance(x, XPath) for x in value):
                    _saved.append((xpaths, name, list(value)))
                    value[:] = [_faster(name, i, x) for i, x in enumerate(value)]
        lookup = isinstance(utils.HTML_PARSER, lxml_html.HTMLParser) and _sha256(lxml_html.HtmlElementClassLookup, lxml_html.HTMLParser) == _LOOKUP_SHA256
        if lookup:
            _saved.append((utils.HTML_PARSER, "set_element_class_lookup", lxml_html.HtmlElementClassLookup()))
            utils.HTML_PARSER.set_element_class_lookup(_html_class_lookup())
        prune = _sha256(htmlprocessing.prune_unwanted_nodes) == _PRUNE_SHA256
        if prune:
            upstream = htmlprocessing.prune_unwanted_nodes
            for name in ("core", "external", "htmlprocessing", "main_extractor", "metadata", "spider"):
                module = importlib.import_module(f"trafilatura.{name}")
                if getattr(module, "prune_unwanted_nodes", None) is upstream:
                    _saved.append((module, "prune_unwanted_nodes", upstream))
                    module.prune_unwanted_nodes = prune_unwanted_nodes
        prepare = _sha256(core._prepare_tree, core._extract_and_compare, core._recall_retry, core.trafilatura_sequence) == _PREPARE_SHA256
        if prepare:
            _saved.append((core, "_prepare_tree", core._prepare_tree))
            core._prepare_tree = _prepare_tree
        # fix 8 reads fix 7's test of BASIC_CLEAN_XPATH, and the baseline module's text rules
        page_text = xpath and _sha256(baseline) == _BASELINE_SHA256 and core.html2txt is baseline.html2txt
        if page_text:
            _saved.append((core, "html2txt", core.html2txt))
            core.html2txt = html2txt
        global _upstream_repair
        repair = _sha256(utils.repair_faulty_html) == _REPAIR_SHA256 and utils.INVALID_XML_CHARS.pattern == _INVALID_XML_CHARS
        if repair:
            _upstream_repair = utils.repair_faulty_html
            _saved.append((utils, "repair_faulty_html", utils.repair_faulty_html))
            utils.repair_faulty_html = repair_faulty_html
        _installed = cleaning and xpath and guards and lookup and prune and prepare and page_text and repair
    return _installed


def installed() -> bool:
    """Whether the fixes are in place in this process now."""
    return bool(_installed)


def uninstall() -> None:
    """Put trafilatura's own code back (tests and `--set trafilatura_fix=false` compare the two)."""
    global _installed
    while _saved:
        target, name, value = _saved.pop()
        if name == "set_element_class_lookup":
            target.set_element_class_lookup(value)  # type: ignore[attr-defined]
        elif isinstance(value, list):
            getattr(target, name)[:] = value
        else:
            setattr(target, name, value)
    _installed = None


def use(enabled: bool) -> None:
    """Fixes in place (True) or trafilatura's own code (False), whichever the config asks for."""
    if enabled and _installed is None:
        install()
    elif not enabled and _installed is not None:
        uninstall()
