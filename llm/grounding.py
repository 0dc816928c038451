"""The grounding check: a summary may state only what its facts sheet says.

Rules (a text passes when no rule finds a violation):
- every number in the text appears among the facts' numbers, allowing rounding
  to fewer decimals (28.4% -> 28%) and percentages either way (0.25 <-> 25%);
  a number glued after letters (p95, v2) is part of a name, not a figure;
- every hex identifier (trace ids, incident ids) appears in the facts verbatim;
- every known service the text names appears in the facts, and so does any
  word shaped like a service name (`billing-service`, `auth-api`, "the auth
  service"), so a plausible but invented service fails too;
- a clause that says a metric went up, went down or stayed the same must
  agree with the direction word the facts give for it (a small model copies
  "went up" from its example even when the error rate fell).

Numbers are extracted from the facts with the same tokenizer, so anything copied
from the facts (dates, endpoint paths, error messages) is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

from llm.facts import META_KEYS

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
# trace/span ids: hex with letters and digits, or any 16+ hex run
_HEX_ID = re.compile(r"\b(?:(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}|[0-9a-f]{16,})\b", re.I)
# a number not glued after a letter/digit/underscore/dot; thousands separators allowed
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\d])(\s*(?:%|percent\b|per\s+cent\b))?(xx\b)?",
    re.I,
)
_SERVICE_SHAPED = re.compile(r"\b([a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_](?:service|svc|api|server|db))\b", re.I)
_NAMED_SERVICE = re.compile(r"\b([A-Za-z][A-Za-z0-9_-]*)\s+(?:micro)?services?\b", re.I)
# words that may precede "service" without naming one
_SERVICE_WORDS = {
    "a", "an", "the", "this", "that", "these", "those", "each", "every", "one", "any", "other", "another",
    "same", "its", "their", "which", "whose", "single", "whole", "entire", "affected", "impacted", "failing",
    "degraded", "slow", "faulty", "problematic", "underlying", "upstream", "downstream", "dependent",
    "dependency", "related", "root", "cause", "primary", "main", "calling", "caller", "called", "backend",
    "frontend", "critical", "healthy", "unhealthy", "of", "to", "for", "and", "or", "in", "on", "by", "from",
    "with", "at", "as", "is", "was", "web", "remote", "internal", "external", "multiple", "several", "two",
    "three", "both", "all", "no", "customer", "user", "other", "neighbouring", "neighboring", "origin",
    "responsible", "likely", "suspected", "probable", "named", "own", "following", "above", "involved",
}


_METRICS = {  # facts key -> how a text refers to it
    "error_rate": re.compile(r"\berror[ _-]?rates?\b|\berrors\b", re.I),
    "p99_latency": re.compile(r"\bp99\b", re.I),
    "p95_latency": re.compile(r"\bp95\b|\blatency\b", re.I),
    "request_rate": re.compile(r"\btraffic\b|\brequest[ _-]?rates?\b|\brequests\b(?!/min)", re.I),
}
_DIRECTIONS = {
    "up": re.compile(r"\b(went up|go(?:es)? up|rose|risen|rising|increased?|increasing|spiked?|jumped|climbed|surged|grew|higher)\b", re.I),
    "down": re.compile(r"\b(went down|go(?:es)? down|fell|fallen|dropped|decreased?|declined?|lower|shrank)\b", re.I),
    "about the same": re.compile(r"\b(stayed|remained|about the same|unchanged|flat|stable|steady|similar)\b", re.I),
}
_WRONG_UNIT = {  # a figure in another metric's unit: the model copied the wrong line
    "error_rate": re.compile(r"\d\s*(ms|requests/min)\b", re.I),
    "p95_latency": re.compile(r"\d\s*(%|requests/min)", re.I),
    "p99_latency": re.compile(r"\d\s*(%|requests/min)", re.I),
    "request_rate": re.compile(r"\d\s*(%|ms\b)", re.I),
}
_CLAUSE_SPLIT = re.compile(r"(?<!\d)[.;](?!\d)|,\s*(?:while|but|and|whereas)\b|\bwhile\b|\bwhereas\b|\bbut\b|\(|\)")
_TREND = re.compile(r"^(up|down|about the same),")


def direction_violations(text: str, facts: dict) -> list[str]:
    """Clauses whose stated direction contradicts the facts' trend word for that metric."""
    trends = {k: m.group(1) for k, v in facts.items() if k in _METRICS and (m := _TREND.search(str(v)))}
    out = []
    for clause in _CLAUSE_SPLIT.split(text):
        metrics = [k for k, rx in _METRICS.items() if rx.search(clause)]
        if "p99_latency" in metrics and "p95_latency" in metrics and not re.search(r"\bp95\b", clause, re.I):
            metrics.remove("p95_latency")  # "p99 latency" names p99 only
        if len(metrics) == 1 and (wrong := _WRONG_UNIT[metrics[0]].search(clause)):
            out.append(f"it gives {metrics[0].replace('_', ' ')} in {wrong.group(1)}, which is a different metric")
            continue
        said = [d for d, rx in _DIRECTIONS.items() if rx.search(clause)]
        if len(metrics) != 1 or len(said) != 1 or metrics[0] not in trends:
            continue
        if said[0] != trends[metrics[0]]:
            name = metrics[0].replace("_", " ")
            out.append(f"it says {name} {'stayed ' if said[0] == 'about the same' else 'went '}{said[0]} but the FACTS say {trends[metrics[0]]}")
    return out


@dataclass
class Number:
    value: Decimal
    decimals: int
    percent: bool
    text: str


@dataclass
class GroundingResult:
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def feedback(self) -> str:
        return "; ".join(self.violations)


def facts_text(facts: dict) -> str:
    """The checked text of a facts mapping (the stored JSON or Facts.lines)."""
    return "\n".join(f"{k}: {v}" for k, v in facts.items() if k not in META_KEYS)


def _strip_identifiers(text: str) -> tuple[str, list[str]]:
    found: list[str] = []

    def take(m: re.Match) -> str:
        found.append(m.group(0).lower())
        return " "

    text = _UUID.sub(take, text)
    text = _HEX_ID.sub(take, text)
    return text, found


def numbers_in(text: str) -> list[Number]:
    """The figures in `text` (identifiers removed first)."""
    text, _ = _strip_identifiers(text)
    out = []
    for m in _NUMBER.finditer(text):
        if m.group(4):  # 5xx, 4xx: a status class, not a figure
            continue
        digits = m.group(1).replace(",", "") + (m.group(2) or "")
        try:
            value = Decimal(digits)
        except InvalidOperation:
            continue
        decimals = len(m.group(2)) - 1 if m.group(2) else 0
        out.append(Number(value, decimals, bool(m.group(3)), m.group(0).strip()))
    return out


def _forms(n: Number) -> set[Decimal]:
    """Values a fact number may be written as: itself, and the other percentage form."""
    forms = {n.value}
    if n.percent:
        forms.add(n.value / 100)
    elif n.value <= 1 and n.decimals > 0:
        forms.add(n.value * 100)
    return forms


def _rounds_to(value: Decimal, target: Number) -> bool:
    quantum = Decimal(1).scaleb(-target.decimals)
    return any(value.quantize(quantum, rounding=r) == target.value for r in (ROUND_HALF_UP, ROUND_HALF_EVEN))


def number_is_grounded(n: Number, facts_numbers: list[Number]) -> bool:
    candidates = {n.value} | ({n.value / 100} if n.percent else set())
    for f in facts_numbers:
        for form in _forms(f):
            if form in candidates or _rounds_to(form, n):
                return True
            if n.percent and _rounds_to(form / 100, Number(n.value / 100, n.decimals + 2, False, n.text)):
                return True
    return False


def _word_in(word: str, text: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_-]){re.escape(word)}(?![A-Za-z0-9_-])", text, re.I) is not None


def check(text: str, facts: dict, known_services: set[str] | frozenset[str] = frozenset()) -> GroundingResult:
    """Check `text` against the facts mapping; `known_services` are all services the platform knows."""
    result = GroundingResult()
    ftext = facts_text(facts)
    if not text.strip():
        result.violations.append("empty summary")
        return result

    _, fact_ids = _strip_identifiers(ftext)
    fact_ids_set = set(fact_ids)
    _, text_ids = _strip_identifiers(text)
    for ident in text_ids:
        if ident not in fact_ids_set:
            result.violations.append(f"identifier {ident} is not in the facts")

    fact_numbers = numbers_in(ftext)
    seen: set[str] = set()
    for n in numbers_in(text):
        if n.text in seen:
            continue
        seen.add(n.text)
        if not number_is_grounded(n, fact_numbers):
            result.violations.append(f"number {n.text} is not in the facts")

    result.violations.extend(direction_violations(text, facts))

    for service in sorted(known_services):
        if _word_in(service, text) and not _word_in(service, ftext):
            result.violations.append(f"service {service} is not in the facts")
    flagged = {v.split()[1] for v in result.violations if v.startswith("service ")}
    for m in _SERVICE_SHAPED.finditer(text):
        name = m.group(1)
        if name.lower() not in flagged and not _word_in(name, ftext):
            flagged.add(name.lower())
            result.violations.append(f"service {name} is not in the facts")
    fact_words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9_-]*", ftext)}
    for m in _NAMED_SERVICE.finditer(text):
        word = m.group(1).lower()
        if word in _SERVICE_WORDS or word in flagged or word in fact_words:
            continue
        if any(w.startswith(word) or word.startswith(w) for w in fact_words if len(w) >= 4 and len(word) >= 4):
            continue  # "payment service" for payments
        flagged.add(word)
        result.violations.append(f"service {m.group(1)} is not in the facts")
    return result
