"""Claim-level grounding: every claim a summary makes must be a claim its facts make.

A summary is read as claims, not tokens (a word found somewhere in the facts is
not enough: "error_surge" may be a similar past incident's type, a service may
be that incident's). The text passes when no claim fails; each failure has a
kind, the words of the claim and a reason a reviewer can read:

- `anomaly_type`: a type the summary names is not one of this incident's;
- `service`: a service the summary names is not among this incident's services;
- `service_role`: a service is named in a role it does not hold (the root
  cause, a root-cause candidate, the service that had the anomaly, a caller or
  a callee);
- `similar_incident`: a type, service, figure or id that only a similar past
  incident has, used about this one (facts of other incidents never lend words
  to this one; a sentence about a similar past incident is checked against the
  similar incidents instead);
- `figure`: a number not in the facts, or attached to a metric whose line does
  not hold it ("error rate ... 1234 requests/min");
- `direction`: a metric said to go up, down or stay the same against the
  direction word its facts line gives;
- `status`: it says the incident is ongoing when the FACTS say resolved, or over
  when they say open;
- `missing_symptom`: the defining symptom of an anomaly type is never stated
  (traffic for traffic_drop/traffic_surge, errors for error_surge, latency for
  latency_spike/latency_drift);
- `quote`: quoted text that is not in the facts (an invented error message);
- `identifier`: a trace or incident id not in the facts;
- `empty`: no text.

Numbers are compared allowing rounding to fewer decimals (28.4% -> 28%) and
percentages either way (0.25 <-> 25%); a number glued after letters (p95, v2)
is part of a name. Figures without a unit (counts, times, dates) may come from
any line of this incident's facts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

from llm.facts import CALLEES, CALLERS, CANDIDATES, META_KEYS, SIMILAR, SYMPTOM_METRIC

KINDS = (
    "anomaly_type",
    "service",
    "service_role",
    "similar_incident",
    "figure",
    "direction",
    "status",
    "missing_symptom",
    "quote",
    "identifier",
    "empty",
)

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
# trace/span ids: hex with letters and digits, or any 16+ hex run
_HEX_ID = re.compile(r"\b(?:(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}|[0-9a-f]{16,})\b", re.I)
# a number not glued after a letter/digit/underscore/dot; thousands separators allowed
_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\d])(\s*(?:%|percent\b|per\s+cent\b))?(xx\b)?",
    re.I,
)
_UNIT_AFTER = re.compile(
    r"\s*(%|percent\b|per\s+cent\b|ms\b|milliseconds?\b|req(?:uests?)?\s*(?:/|per\s+)\s*min(?:ute)?\b|rpm\b)", re.I
)
_QUOTE = re.compile(r"\"([^\"]+)\"|“([^”]+)”")
_SERVICE_SHAPED = re.compile(r"\b([a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_](?:service|svc|api|server|db))\b", re.I)
_NAMED_SERVICE = re.compile(r"\b([A-Za-z][A-Za-z0-9_-]*)\s+(?:micro)?services?\b", re.I)
# words that may precede "service" without naming one
_SERVICE_WORDS = {
    "a",
    "an",
    "the",
    "this",
    "that",
    "these",
    "those",
    "each",
    "every",
    "one",
    "any",
    "other",
    "another",
    "same",
    "its",
    "their",
    "which",
    "whose",
    "single",
    "whole",
    "entire",
    "affected",
    "impacted",
    "failing",
    "degraded",
    "slow",
    "faulty",
    "problematic",
    "underlying",
    "upstream",
    "downstream",
    "dependent",
    "dependency",
    "related",
    "root",
    "cause",
    "primary",
    "main",
    "calling",
    "caller",
    "called",
    "backend",
    "frontend",
    "critical",
    "healthy",
    "unhealthy",
    "of",
    "to",
    "for",
    "and",
    "or",
    "in",
    "on",
    "by",
    "from",
    "with",
    "at",
    "as",
    "is",
    "was",
    "web",
    "remote",
    "internal",
    "external",
    "multiple",
    "several",
    "two",
    "three",
    "both",
    "all",
    "no",
    "customer",
    "user",
    "neighbouring",
    "neighboring",
    "origin",
    "responsible",
    "likely",
    "suspected",
    "probable",
    "named",
    "own",
    "following",
    "above",
    "involved",
}

# how a text names each anomaly type (nouns only: "traffic dropped" is a direction, not a type)
_TYPES = {
    "error_surge": re.compile(r"\berror[ _-]surges?\b|\bsurges? (?:in|of) errors\b", re.I),
    "latency_spike": re.compile(r"\blatency[ _-]spikes?\b|\bspikes? in latency\b", re.I),
    "latency_drift": re.compile(r"\blatency[ _-]drifts?\b|\bdrifts? in latency\b", re.I),
    "traffic_drop": re.compile(r"\btraffic[ _-]drops?\b|\bdrops? in traffic\b", re.I),
    "traffic_surge": re.compile(r"\btraffic[ _-]surges?\b|\bsurges? in traffic\b", re.I),
    "multivariate": re.compile(r"\bmultivariate\b", re.I),
}
_METRICS = {  # facts key -> how a text refers to it
    "error_rate": re.compile(r"\berror[ _-]?rates?\b|\berrors\b", re.I),
    "p99_latency": re.compile(r"\bp99(?:[ _-]latency)?\b", re.I),
    "p95_latency": re.compile(r"\bp95(?:[ _-]latency)?\b|(?<!p99 )\blatency\b", re.I),
    "request_rate": re.compile(
        r"\btraffic\b|\brequest[ _-]?rates?\b|\brequests\b(?!\s*(?:/|per\s+)\s*min)|\bthroughput\b", re.I
    ),
}
_SYMPTOM_METRICS = {
    "request_rate": ("request_rate",),
    "error_rate": ("error_rate",),
    "p95_latency": ("p95_latency", "p99_latency"),
}
_UNIT_METRIC = {"%": ("error_rate",), "ms": ("p95_latency", "p99_latency"), "rpm": ("request_rate",)}
_DIRECTIONS = {
    "up": re.compile(
        r"\b(up|went up|go(?:es)? up|rose|risen|rising|increased?|increasing|spiked?|jumped|climbed|surged|grew|higher)\b",
        re.I,
    ),
    "down": re.compile(
        r"\b(down|went down|go(?:es)? down|fell|fallen|dropped|decreased?|declined?|lower|shrank)\b", re.I
    ),
    "about the same": re.compile(r"\b(stayed|remained|about the same|unchanged|flat|stable|steady|similar)\b", re.I),
}
_CLAUSE_SPLIT = re.compile(r"(?<!\d)[.;](?!\d)|,\s*(?:while|but|and|whereas)\b|\bwhile\b|\bwhereas\b|\bbut\b")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_PAST_INCIDENT = re.compile(r"\b(similar|previous|past|earlier|prior|last)\b[^.]*?\bincidents?\b", re.I)
_ENDPOINT = re.compile(r"(?<![\w/])/[A-Za-z0-9_./{}:-]+")

# role cues: words just before a service name (or just after it) saying what role it has
_ROOT_BEFORE = re.compile(
    r"(?:root[ -]?causes?|rooted in|caused by|originat\w* (?:in|from|at)|because of|due to|stems? from|traced (?:back )?to|culprit)"
    r"(?:\W+\w+){0,4}?\W*$",
    re.I,
)
_CANDIDATE_BEFORE = re.compile(r"candidates?\b(?:\W+\w+){0,6}?\W*$", re.I)
_ROOT_AFTER = re.compile(
    r"^\W*(?:service\s+)?(?:(?:is|was|as|being|seems|appears)\s+(?:to be\s+)?)?(?:the\s+)?(?:likely|probable|suspected|most likely)?\s*(?:root[ -]?cause|culprit|origin)\b",
    re.I,
)
_RELATED_BEFORE = re.compile(
    r"(?:related(?: services?)?|also affected|also impacted|along with|together with|as well as)(?:\s+(?:is|are|was|were|include|included|:))?\W*(?:(?:\w+\W+){0,3}?)$",
    re.I,
)
_AFFECTED_AFTER = re.compile(r"^\W*(?:service\s+)?(?:(?:was|were|is|are)\s+)?(?:also\s+)?(?:affected|impacted)\b", re.I)
_CALLEE_BEFORE = re.compile(
    r"(?:calling|calls? to|calls|called|callees?|depends on|requests to|timeouts? (?:to|from|calling))\W*(?:the\s+)?$",
    re.I,
)
_STATUS = {  # what a text says about the incident's state, and the status that allows it
    "open": re.compile(
        r"\b(ongoing|so far|still (?:open|ongoing|active|running)|is open|remains open|has been open)\b", re.I
    ),
    "resolved": re.compile(r"\b(resolved|ended|recovered|is over|was over|has ended|closed)\b", re.I),
}
# "the root cause is X": X must be the root cause, also when X is no service the check knows
_ROOT_NAMED = re.compile(
    r"\broot[ -]?cause (?:is|was|appears to be|seems to be|lies in|:)\s*(?:likely\s+|probably\s+)?(?:the\s+|in\s+)?([A-Za-z][\w-]*)",
    re.I,
)
_NOT_A_NAME = {
    "unknown",
    "not",
    "unclear",
    "a",
    "an",
    "its",
    "their",
    "this",
    "that",
    "likely",
    "still",
    "being",
    "under",
    "none",
}
_LIST_JOIN = re.compile(r"\W*(?:and|or)?\W*", re.I)
_CALLER_BEFORE = re.compile(r"(?:called by|calls? from|callers?|requests from)\W*(?:the\s+)?$", re.I)


@dataclass(frozen=True)
class ClaimFailure:
    kind: str  # one of KINDS
    claim: str  # the words of the summary the claim was read from
    reason: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "claim": self.claim, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass
class GroundingResult:
    failures: list[ClaimFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def violations(self) -> list[str]:
        return [str(f) for f in self.failures]

    def by_kind(self) -> Counter:
        return Counter(f.kind for f in self.failures)

    def feedback(self) -> str:
        return "; ".join(f.reason for f in self.failures)

    def add(self, kind: str, claim: str, reason: str) -> None:
        failure = ClaimFailure(kind, claim.strip(), reason)
        if failure not in self.failures:
            self.failures.append(failure)


@dataclass
class Number:
    value: Decimal
    decimals: int
    percent: bool
    text: str
    start: int = 0
    unit: str | None = None  # %, ms or rpm when a unit follows


# -- facts -------------------------------------------------------------------------------
def facts_text(facts: dict) -> str:
    """The checked text of this incident's facts (the stored JSON or Facts.lines), without
    bookkeeping and without the similar past incidents."""
    return "\n".join(f"{k}: {v}" for k, v in facts.items() if k not in META_KEYS)


def similar_text(facts: dict) -> str:
    similar = facts.get(SIMILAR) or []
    return "\n".join(similar) if isinstance(similar, list) else str(similar)


def _split(value: str | None) -> list[str]:
    return [s.strip() for s in (value or "").split(",") if s.strip() and s.strip() != "none"]


@dataclass
class _Roles:
    affected: str
    root: str
    related: set[str]
    callers: set[str]
    callees: set[str]
    candidates: set[str]
    types: list[str]
    error_services: set[str]  # services the incident's own error messages name

    @property
    def all(self) -> set[str]:
        return {self.affected, self.root, *self.related, *self.callers, *self.callees, *self.candidates}


def _roles(facts: dict, names: set[str]) -> _Roles:
    affected = facts.get("affected_service") or facts.get("service") or ""
    errors = facts.get("top_errors") or ""
    return _Roles(
        affected=affected,
        root=facts.get("root_cause_service") or affected,
        related=set(_split(facts.get("related_services"))),
        callers=set(_split(facts.get(CALLERS))),
        callees=set(_split(facts.get(CALLEES))),
        candidates={c.split(" (")[0] for c in _split(facts.get(CANDIDATES))},
        types=_split(facts.get("anomaly_types")),
        error_services={n for n in names if _word_in(n, errors)},
    )


# -- numbers -----------------------------------------------------------------------------
def _blank(m: re.Match) -> str:
    return " " * len(m.group(0))


def _strip_identifiers(text: str) -> tuple[str, list[str]]:
    """The text with ids blanked (same length, so positions hold) and the ids found."""
    found = [m.group(0).lower() for rx in (_UUID, _HEX_ID) for m in rx.finditer(text)]
    return _HEX_ID.sub(_blank, _UUID.sub(_blank, text)), found


def numbers_in(text: str) -> list[Number]:
    """The figures in `text` (identifiers removed first), with their positions and units."""
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
        unit = "%" if m.group(3) else None
        if unit is None and (u := _UNIT_AFTER.match(text, m.end())):
            word = u.group(1).lower()
            unit = (
                "%" if word.startswith("%") or "cent" in word else "ms" if word.startswith(("ms", "milli")) else "rpm"
            )
        out.append(Number(value, decimals, bool(m.group(3)), m.group(0).strip(), m.start(), unit))
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
    return re.search(rf"(?<![A-Za-z0-9_/-]){re.escape(word)}(?![A-Za-z0-9_-])", text, re.I) is not None


# -- the text's parts ----------------------------------------------------------------------
def _unquote(text: str, facts_all: str, similar: str, result: GroundingResult) -> str:
    """Blank quoted text copied from the facts (an error message is the facts' words, not a
    claim of the summary's); quoted text that is not in the facts fails."""

    def take(m: re.Match) -> str:
        quoted = (m.group(1) or m.group(2) or "").strip()
        if quoted and quoted.lower() not in facts_all.lower():
            if similar and quoted.lower() in similar.lower():
                result.add(
                    "similar_incident",
                    m.group(0),
                    f'the quoted "{quoted}" is from a similar past incident, not this one',
                )
            else:
                result.add("quote", m.group(0), f'the quoted "{quoted}" is not in the FACTS')
        return " " * len(m.group(0))

    return _QUOTE.sub(take, text)


def _blank_types(text: str) -> str:
    for rx in _TYPES.values():
        text = rx.sub(_blank, text)
    return text


def _clauses(sentence: str) -> list[tuple[int, str]]:
    """(offset, clause) pieces of a sentence, so positions stay comparable."""
    out, pos = [], 0
    for m in _CLAUSE_SPLIT.finditer(sentence):
        out.append((pos, sentence[pos : m.start()]))
        pos = m.end()
    out.append((pos, sentence[pos:]))
    return out


def _metric_mentions(clause: str) -> list[tuple[int, str]]:
    found = [(m.start(), key) for key, rx in _METRICS.items() for m in rx.finditer(clause)]
    found += [(m.start(), "affected_endpoints") for m in _ENDPOINT.finditer(clause)]
    return sorted(found)


def _attached_metric(pos: int, mentions: list[tuple[int, str]]) -> str | None:
    """The metric a figure or direction word at `pos` is attached to: the nearest named before
    it in its clause, else the first named after it."""
    before = [k for p, k in mentions if p < pos]
    if before:
        return before[-1]
    after = [k for p, k in mentions if p > pos]
    return after[0] if after else None


def _service_mentions(text: str, names: set[str], fact_words: set[str]) -> list[tuple[int, int, str]]:
    """(start, end, service) for every service the text names: known names, names shaped like a
    service (`billing-service`), and "<word> service" in prose."""
    found: dict[int, tuple[int, int, str]] = {}
    for name in sorted(names, key=len, reverse=True):
        for m in re.finditer(rf"(?<![A-Za-z0-9_/-]){re.escape(name)}(?![A-Za-z0-9_-])", text, re.I):
            if not any(s <= m.start() < e for s, e, _ in found.values()):
                found[m.start()] = (m.start(), m.end(), name)
    lowered = {n.lower(): n for n in names}
    for m in _SERVICE_SHAPED.finditer(text):
        if m.start(1) not in found and m.group(1).lower() not in lowered:
            found[m.start(1)] = (m.start(1), m.end(1), m.group(1))
    for m in _NAMED_SERVICE.finditer(text):
        word = m.group(1).lower()
        if m.start(1) in found or word in _SERVICE_WORDS or any(s <= m.start(1) < e for s, e, _ in found.values()):
            continue
        near = [
            n
            for n in names
            if len(n) >= 4 and len(word) >= 4 and (n.lower().startswith(word) or word.startswith(n.lower()))
        ]
        if near:  # "payment service" for payments
            found[m.start(1)] = (m.start(1), m.end(1), near[0])
        elif word not in fact_words:
            found[m.start(1)] = (m.start(1), m.end(1), m.group(1))
    return sorted(found.values())


# -- the claims ------------------------------------------------------------------------------
def _check_identifiers(text: str, facts_all: str, similar: str, result: GroundingResult) -> None:
    _, fact_ids = _strip_identifiers(facts_all)
    _, similar_ids = _strip_identifiers(similar)
    for ident in _strip_identifiers(text)[1]:
        if ident not in fact_ids:
            kind = "similar_incident" if ident in similar_ids else "identifier"
            result.add(kind, ident, f"identifier {ident} is not in this incident's FACTS")


def _check_types(sentence: str, roles: _Roles, similar: str, result: GroundingResult) -> None:
    for anomaly_type, rx in _TYPES.items():
        for m in rx.finditer(sentence):
            if anomaly_type in roles.types:
                continue
            if rx.search(similar) or anomaly_type in similar:
                result.add(
                    "similar_incident",
                    m.group(0),
                    f"it names {anomaly_type}, the type of a similar past incident; this incident is {', '.join(roles.types)}",
                )
            else:
                result.add(
                    "anomaly_type",
                    m.group(0),
                    f"it names {anomaly_type}, but this incident's anomaly types are {', '.join(roles.types)}",
                )


def _role_of(head: str, tail: str) -> str | None:
    """The role cue bound to a service mention: in the words between the previous mention and
    this one (`head`), or right after it (`tail`)."""
    if _CANDIDATE_BEFORE.search(head):
        return "candidate"
    if _ROOT_BEFORE.search(head) or _ROOT_AFTER.match(tail):
        return "root cause"
    if _CALLER_BEFORE.search(head):
        return "caller"
    if _CALLEE_BEFORE.search(head):
        return "callee"
    if _RELATED_BEFORE.search(head):
        return "related"
    if _AFFECTED_AFTER.match(tail):
        return "affected"
    return None


def _check_services(
    sentence: str, roles: _Roles, names: set[str], similar: str, fact_words: set[str], result: GroundingResult
) -> None:
    incident = {s.lower() for s in roles.all}
    for _, clause in _clauses(sentence):
        mentions = _service_mentions(clause, names, fact_words)
        type_at = [m.start() for rx in _TYPES.values() for m in rx.finditer(clause)]
        prev_end, prev_role = 0, None
        for start, end, name in mentions:
            words = clause[start:end]
            head = clause[prev_end:start]
            role = _role_of(head, clause[end:])
            if role is None and prev_end and _LIST_JOIN.fullmatch(head):
                role = prev_role  # "related services: checkout and inventory"
            prev_end, prev_role = end, role
            if name.lower() not in incident:
                if _word_in(name, similar):
                    result.add(
                        "similar_incident", words, f"{name} is a service of a similar past incident, not of this one"
                    )
                else:
                    result.add(
                        "service",
                        words,
                        f"service {name} is not among this incident's services ({', '.join(sorted(roles.all))})",
                    )
                continue
            if role == "root cause" and name.lower() != roles.root.lower():
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as the root cause; the FACTS say the root cause is {roles.root}",
                )
            elif role == "candidate" and name not in roles.candidates:
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as a root-cause candidate; the FACTS' candidates are {', '.join(sorted(roles.candidates)) or 'none'}",
                )
            elif role == "caller" and name not in roles.callers:
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as a caller of {roles.affected}; the FACTS' callers are {', '.join(sorted(roles.callers)) or 'none'}",
                )
            elif role == "callee" and name not in roles.callees | roles.error_services | {roles.affected}:
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as a service {roles.affected} calls; the FACTS' callees are {', '.join(sorted(roles.callees)) or 'none'}",
                )
            elif role == "related" and name not in roles.related | {roles.root, roles.affected}:
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as a related service; the FACTS' related services are {', '.join(sorted(roles.related)) or 'none'}",
                )
            elif role == "affected" and name not in roles.related | {roles.affected, roles.root}:
                result.add(
                    "service_role",
                    clause,
                    f"it names {name} as affected; the FACTS say {roles.affected} (related: {', '.join(sorted(roles.related)) or 'none'})",
                )
            elif role is None and type_at and name.lower() != roles.affected.lower():
                # the service nearest an anomaly type is the one said to have it
                nearest = min(mentions, key=lambda m: min(abs(m[0] - t) for t in type_at))
                if nearest[0] == start:
                    result.add(
                        "service_role",
                        clause,
                        f"it says {name} had the anomaly; the FACTS' affected service is {roles.affected}",
                    )


def _check_named_root(sentence: str, roles: _Roles, names: set[str], result: GroundingResult) -> None:
    for m in _ROOT_NAMED.finditer(sentence):
        word = m.group(1)
        if word.lower() in _NOT_A_NAME or word.lower() in {n.lower() for n in names | {roles.root}}:
            continue  # known services are checked with their role in _check_services
        result.add(
            "service_role",
            m.group(0),
            f"it names {word} as the root cause; the FACTS say the root cause is {roles.root}",
        )


def _check_figures(
    sentence: str, facts: dict, fact_numbers: list[Number], similar_numbers: list[Number], result: GroundingResult
) -> None:
    line_numbers = {k: numbers_in(str(v)) for k, v in facts.items() if k not in META_KEYS}
    for _, clause in _clauses(sentence):
        mentions = _metric_mentions(clause)
        endpoint_named = [p for p, k in mentions if k == "affected_endpoints"]
        for n in numbers_in(clause):
            if not number_is_grounded(n, fact_numbers):
                if similar_numbers and number_is_grounded(n, similar_numbers):
                    result.add(
                        "similar_incident", n.text, f"{n.text} is a figure of a similar past incident, not of this one"
                    )
                else:
                    result.add("figure", n.text, f"number {n.text} is not in the FACTS")
                continue
            if n.unit is None:
                continue  # a count, a time, a date: any line of the facts may hold it
            metric = _attached_metric(n.start, [m for m in mentions if m[1] != "affected_endpoints"])
            if metric is None:
                continue
            allowed = line_numbers.get(metric, []) + (
                line_numbers.get("affected_endpoints", []) if any(p < n.start for p in endpoint_named) else []
            )
            if metric == "p95_latency" and "p95" not in clause.lower():
                allowed += line_numbers.get("p99_latency", [])  # plain "latency": p95 or p99
            if not number_is_grounded(n, allowed):
                name = metric.replace("_", " ")
                result.add(
                    "figure",
                    clause,
                    f"it gives {n.text} for {name}, but the FACTS' {name} is: {facts.get(metric, 'not given')}",
                )


def _check_directions(sentence: str, facts: dict, result: GroundingResult) -> None:
    trends = {k: str(facts[k]).split(",")[0].strip() for k in _METRICS if k in facts}
    for _, clause in _clauses(_blank_types(sentence)):
        mentions = [m for m in _metric_mentions(clause) if m[1] != "affected_endpoints"]
        for direction, rx in _DIRECTIONS.items():
            for m in rx.finditer(clause):
                metric = _attached_metric(m.start(), mentions)
                expected = trends.get(metric or "")
                if expected in _DIRECTIONS and expected != direction:
                    name = metric.replace("_", " ")
                    said = "stayed about the same" if direction == "about the same" else f"went {direction}"
                    result.add("direction", clause, f"it says {name} {said} but the FACTS say {expected}")


def _check_status(sentence: str, facts: dict, result: GroundingResult) -> None:
    status = str(facts.get("status") or "").strip()
    for said, rx in _STATUS.items():
        if status in _STATUS and said != status and (m := rx.search(sentence)):
            result.add(
                "status",
                m.group(0),
                f"it says the incident is {'ongoing' if said == 'open' else 'over'} ({m.group(0)}); the FACTS say {status}",
            )


def _check_symptoms(sentences: list[str], roles: _Roles, result: GroundingResult) -> None:
    clauses = [c for s in sentences for _, c in _clauses(_blank_types(s))]
    for anomaly_type in roles.types:
        key = SYMPTOM_METRIC.get(anomaly_type)
        if key is None:
            continue
        keys = _SYMPTOM_METRICS[key]
        stated = any(
            any(m[1] in keys for m in _metric_mentions(c))
            and (numbers_in(c) or any(rx.search(c) for rx in _DIRECTIONS.values()))
            for c in clauses
        )
        if not stated:
            word = {
                "request_rate": "traffic (request rate)",
                "error_rate": "the error rate",
                "p95_latency": "the latency",
            }[key]
            result.add(
                "missing_symptom", anomaly_type, f"it never states {word}, the defining symptom of {anomaly_type}"
            )


def _check_past_sentence(sentence: str, similar: str, facts_all: str, names: set[str], result: GroundingResult) -> None:
    """A sentence about a similar past incident: checked against the similar incidents."""
    pool = f"{similar}\n{facts_all}"
    for n in numbers_in(sentence):
        if not number_is_grounded(n, numbers_in(pool)):
            result.add("figure", sentence, f"number {n.text} is not in the similar past incidents")
    for anomaly_type, rx in _TYPES.items():
        for m in rx.finditer(sentence):
            if anomaly_type not in similar and not rx.search(similar):
                result.add("anomaly_type", m.group(0), f"no similar past incident was a {anomaly_type}")
    for _, _, name in _service_mentions(sentence, names, set()):
        if not _word_in(name, pool):
            result.add("service", name, f"service {name} is not in the similar past incidents")


def sentences_of(text: str) -> list[str]:
    return [x.strip() for x in _SENTENCE_SPLIT.split(text.strip()) if x.strip()]


def without_failing_sentence(text: str, facts: dict, known_services=frozenset()) -> tuple[str, str] | None:
    """(kept text, dropped sentence) when the claims that failed all sit in one sentence after the
    first and the rest of the text passes every claim (the defining symptom included); else None.

    The model's own words, less the sentence it got wrong (typically a top error copied from the
    worked example into an incident that has none): cheaper than a retry, never less faithful."""
    parts = sentences_of(text)
    if len(parts) < 3:
        return None
    for i in range(1, len(parts)):
        kept = " ".join(p for j, p in enumerate(parts) if j != i)
        if check(kept, facts, known_services).ok:
            return kept, parts[i]
    return None


def check(text: str, facts: dict, known_services: set[str] | frozenset[str] = frozenset()) -> GroundingResult:
    """Check every claim of `text` against the facts mapping; `known_services` are all services
    the platform knows (so a real but uninvolved service is caught too)."""
    result = GroundingResult()
    if not text.strip():
        result.add("empty", "", "empty summary")
        return result
    facts_all = facts_text(facts)
    similar = similar_text(facts)
    fact_words = {w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9_-]*", facts_all)}
    similar_names = {w for w in re.findall(r"[A-Za-z][A-Za-z0-9_-]*", similar) if w in known_services}
    roles = _roles(facts, set(known_services))
    names = set(known_services) | roles.all | similar_names
    names.discard("")

    _check_identifiers(text, facts_all, similar, result)
    plain = _strip_identifiers(_unquote(text, facts_all, similar, result))[0]
    fact_numbers = numbers_in(facts_all)
    similar_numbers = numbers_in(similar)
    own: list[str] = []
    for sentence in _SENTENCE_SPLIT.split(plain):
        if not sentence.strip():
            continue
        if _PAST_INCIDENT.search(sentence):
            _check_past_sentence(sentence, similar, facts_all, names, result)
            continue
        own.append(sentence)
        _check_types(sentence, roles, similar, result)
        _check_services(sentence, roles, names, similar, fact_words, result)
        _check_named_root(sentence, roles, names, result)
        _check_figures(sentence, facts, fact_numbers, similar_numbers, result)
        _check_directions(sentence, facts, result)
        _check_status(sentence, facts, result)
    _check_symptoms(own, roles, result)
    return result
