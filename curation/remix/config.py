"""Settings of the remix: domains, target mixture, repetition cap, shuffle seed, shard size.

The DeepSeek LLM report rebalances its corpus so under-represented domains get a larger share and
gives no numbers. The target weights below are our illustrative default for a web-only corpus
(favouring knowledge-dense domains over commerce and the catch-all), to be set per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DomainRule:
    name: str
    # Regular expressions searched in the URL (scheme stripped, lowercased), e.g. r"(^|\.)wikipedia\.org/".
    url_patterns: list[str] = field(default_factory=list)
    # Case-insensitive keywords counted in the title and the first `keyword_chars` characters.
    keywords: list[str] = field(default_factory=list)
    min_keyword_hits: int = 3


def _default_domains() -> list[DomainRule]:
    # URL patterns first (precise where they match), then keyword rules (broad), else "other".
    # Order matters: the first rule that matches wins, URL rules before any keyword rule.
    return [
        DomainRule("encyclopedia", [r"(^|\.)(wikipedia|wikibooks|wikisource|wiktionary|baike\.baidu|baike\.com|britannica|fandom|huijiwiki|wikidot)\.", r"/wiki/"],
                   ["encyclopedia", "百科", "词条"], 3),
        DomainRule("code", [r"(^|\.)(github|gitlab|bitbucket|stackoverflow|sourceforge|readthedocs|pypi|npmjs|csdn|cnblogs)\.", r"/docs?/(api|reference)"],
                   ["def ", "function(", "import ", "#include", "public class", "const ", "return ", "git clone", "npm install", "pip install", "=>", "代码"], 5),
        DomainRule("science", [r"(^|\.)(arxiv|ncbi\.nlm\.nih|nature|sciencedirect|springer|plos|biorxiv|researchgate|cnki|rhhz)\.", r"\.edu(\.[a-z]{2})?/", r"\.ac\.[a-z]{2}/", r"/journal", r"/doi/"],
                   ["abstract", "doi:", "et al.", "hypothesis", "experiment", "journal", "citation", "摘要", "关键词", "研究", "实验"], 4),
        DomainRule("news", [r"(^|\.)(bbc|cnn|reuters|nytimes|theguardian|washingtonpost|apnews|bloomberg|forbes|xinhuanet|people\.com\.cn|chinanews|sina|sohu|163|ifeng)\.", r"/news/", r"/(19|20)\d\d/\d\d/\d\d/"],
                   ["reported", "according to", "said on", "told reporters", "press release", "spokesperson", "记者", "报道", "新闻"], 3),
        DomainRule("forum", [r"(^|\.)(reddit|quora|stackexchange|zhihu|tieba\.baidu|douban)\.", r"(^|[./])(forums?|bbs|community|discuss|board)[./]", r"viewtopic|showthread|/thread", r"/t/[^/]+/\d+"],
                   ["reply", "posted by", "quote", "thread", "joined:", "回复", "楼主", "帖子"], 4),
        DomainRule("commerce", [r"(^|\.)(amazon|ebay|etsy|aliexpress|taobao|tmall|jd|walmart|alibaba)\.", r"/(shop|store|product|products|cart|checkout|item)s?/"],
                   ["add to cart", "price", "shipping", "in stock", "buy now", "checkout", "free delivery", "价格", "购买", "包邮"], 4),
    ]


@dataclass
class RemixConfig:
    domains: list[DomainRule] = field(default_factory=_default_domains)
    keyword_chars: int = 3000
    # Target share of each domain (renormalised over the domains present). Our illustrative choice.
    weights: dict[str, float] = field(default_factory=lambda: {
        "encyclopedia": 0.15, "science": 0.15, "code": 0.10, "news": 0.15, "forum": 0.10, "commerce": 0.05, "other": 0.30,
    })
    # Mixture measured in text bytes (a proxy for tokens) or in documents.
    unit: str = "bytes"
    # Output size relative to the input (1.0: as many bytes/documents as came in, rebalanced).
    scale: float = 1.0
    # Up-sampling cap: repeating data up to ~4 epochs is nearly as good as new data (Muennighoff
    # et al. 2023, "Scaling Data-Constrained Language Models"); beyond, returns fall quickly. A
    # domain that would need more stays short of its target, and the others fill the gap.
    max_epochs: float = 4.0
    seed: int = 0
    # Output shards: the shuffled key range is split into ceil(total / target) equal parts, so a
    # shard holds about this many bytes (or documents, when shard_target_docs is set).
    shard_target_bytes: int = 64 * 1024 * 1024
    shard_target_docs: int | None = None
    # Rehydration (FineWeb-2, Penedo et al. 2025; github.com/huggingface/fineweb-2): deduplication
    # keeps one document per duplicate cluster, and FineWeb-2 found that writing it more often the
    # larger its cluster was (a crude popularity signal) helped. Off by default: the DeepSeek LLM
    # report does not do it. The cluster size is dedup's metadata.dedup_cluster_size (none: 1).
    rehydrate: bool = False
    # {smallest cluster size: copies}: a document of a cluster of N counts as the copies of the
    # largest key <= N. FineWeb-2's table: N for N <= 3, 3 for N = 4, 5 for 5..99, 8 for
    # 100..999, and 1 from 1000 up ("very large clusters are lower quality").
    rehydrate_weights: dict[int, int] = field(default_factory=lambda: {1: 1, 2: 2, 3: 3, 5: 5, 100: 8, 1000: 1})
