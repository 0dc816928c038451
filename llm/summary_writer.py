"""The summary writer behind `python -m llm.narrator`: find incidents needing a summary, write grounded
summaries, track the backlog.

An incident is pending when it has no summary, or when it changed after the
facts its latest summary was built from (`incidents.updated_at` newer than the
`incident_updated_at` recorded in that summary's facts). For each one: build
the facts, ask the model (its answer constrained to a JSON schema of the
summary's parts, see llm.prompt, and joined), check its claims (llm.grounding); a failing text gets one corrective
retry, then the deterministic template is stored instead (`generated_by =
'template'`). When the model server refuses the request for this incident (a
4xx: its prompt is over the server's limit or context, ...), the template is
stored at once: a refusal is about this incident, so the next ones go on. The
facts stored with a template say why (`template_reason`). When the model server
is down, too slow or does not serve the model, nothing is stored: the incident
stays pending (the backlog, reported in the heartbeat) and is summarised once
the server answers again. Anomalies and incidents are only read.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field

from llm import grounding, prompt
from llm.client import LLMRefused, LLMUnavailable, NarratorLLM
from llm.facts import CLAIM_FAILURES, REJECTED_SUMMARIES, TEMPLATE_REASON, Facts, build_facts, known_services
from llm.template import template_summary
from observability import metrics, summaries, tables
from observability.logs import get_logger
from observability.run_loop import run_loop
from observability.store import Store, utcnow

log = get_logger(__name__)


def pending_incidents(store: Store) -> list[str]:
    return summaries.awaiting_summary(store)


@dataclass
class Summary:
    incident_id: str
    service: str
    summary: str
    generated_by: str  # llm | template
    model: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    facts: dict
    attempts: list[dict] = field(default_factory=list)  # each LLM try: text, violations, failures (logs, bench)

    @property
    def claim_failures(self) -> list[dict]:
        return [dict(f, attempt=n) for n, a in enumerate(self.attempts, 1) for f in a["failures"]]


def _reviewed(facts: dict, attempts: list[dict]) -> dict:
    """The facts JSON plus the refused texts and their failing claims (when any were refused)."""
    refused = [(n, a) for n, a in enumerate(attempts, 1) if a["failures"]]
    if not refused:
        return facts
    return {
        **facts,
        REJECTED_SUMMARIES: [
            {
                "attempt": n,
                "text": a["text"],
                **({"dropped_sentence": a["dropped_sentence"]} if "dropped_sentence" in a else {}),
            }
            for n, a in refused
        ],
        CLAIM_FAILURES: [dict(f, attempt=n) for n, a in refused for f in a["failures"]],
    }


def summarise(facts: Facts, llm: NarratorLLM, services: set[str]) -> Summary:
    """A grounded summary of one incident (the template when the model's text failed the check,
    or the server refused the request); raises LLMUnavailable (nothing to store)."""
    block = facts.block()
    attempts: list[dict] = []
    latency = 0.0
    prompt_tokens = completion_tokens = 0
    messages = prompt.build_messages(block)
    reason = "failed the grounding check twice"  # the kinds are appended below
    for attempt in (1, 2):
        try:
            reply = llm.chat(messages, format=prompt.schema(block))
        except LLMRefused as exc:
            log.warning(
                "model server refused the request; storing the template",
                incident_id=facts.incident_id,
                attempt=attempt,
                error=str(exc),
            )
            reason = f"the model server refused the request: {exc}"
            break
        reply.text = prompt.joined(reply.text)
        latency += reply.latency_ms
        prompt_tokens += reply.prompt_tokens or 0
        completion_tokens += reply.completion_tokens or 0
        result = grounding.check(reply.text, facts.lines, services)
        attempts.append(
            {
                "text": reply.text,
                "violations": result.violations,
                "latency_ms": reply.latency_ms,
                "failures": [f.as_dict() for f in result.failures],
            }
        )
        text = reply.text if result.ok else None
        if not result.ok and (repaired := grounding.without_failing_sentence(reply.text, facts.lines, services)):
            text, dropped = repaired
            attempts[-1]["dropped_sentence"] = dropped
            log.info(
                "summary kept without its failing sentence",
                incident_id=facts.incident_id,
                attempt=attempt,
                dropped=dropped,
            )
        if text is not None:
            return Summary(
                facts.incident_id,
                facts.service,
                text,
                "llm",
                reply.model,
                latency,
                prompt_tokens,
                completion_tokens,
                _reviewed(facts.as_json(), attempts),
                attempts,
            )
        log.info(
            "summary failed grounding", incident_id=facts.incident_id, attempt=attempt, violations=result.feedback()
        )
        messages = prompt.retry_messages(block, reply.text, result.feedback())
    if attempts and reason.startswith("failed"):
        kinds = sorted({f["kind"] for a in attempts for f in a["failures"]})
        reason = f"{reason} ({', '.join(kinds)})"
    text = template_summary(facts.lines)
    return Summary(
        facts.incident_id,
        facts.service,
        text,
        "template",
        llm.model,
        latency,
        prompt_tokens,
        completion_tokens,
        {**_reviewed(facts.as_json(), attempts), TEMPLATE_REASON: reason},
        attempts,
    )


def store_summary(store: Store, s: Summary) -> str:
    summary_id = str(uuid.uuid4())
    store.execute(
        f"""INSERT INTO {tables.INCIDENT_SUMMARIES} (id, incident_id, service, created_at, summary, generated_by,
                model, latency_ms, prompt_tokens, completion_tokens, facts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            summary_id,
            s.incident_id,
            s.service,
            utcnow(),
            s.summary,
            s.generated_by,
            s.model,
            s.latency_ms,
            s.prompt_tokens,
            s.completion_tokens,
            json.dumps(s.facts),
        ],
    )
    return summary_id


def observe_summary(s: Summary, seconds: float) -> None:
    """Narrator latency by writer, and why the template stood in for the model (a short reason label)."""
    metrics.NARRATOR_LATENCY.labels(s.generated_by).observe(seconds)
    metrics.EVENTS_OUT.labels(metrics.NARRATOR, "summary").inc()
    if s.generated_by == "template":
        reason = str(s.facts.get(TEMPLATE_REASON, ""))
        label = "grounding" if "grounding" in reason else "refused" if "refused" in reason else "other"
        metrics.NARRATOR_FALLBACKS.labels(label).inc()


@dataclass
class CycleResult:
    summarised: int = 0
    llm: int = 0
    template: int = 0
    pending: int = 0  # left after the cycle (the backlog)
    llm_down: str | None = None  # why the model could not be reached, if it could not

    def line(self) -> str:
        state = "down" if self.llm_down else "ok"
        return f"narrated incidents={self.summarised} llm={self.llm} template={self.template} pending={self.pending} model_server={state}"


class Narrator:
    def __init__(self, settings, store: Store | None = None, llm: NarratorLLM | None = None) -> None:
        self.settings = settings
        self.store = store or Store.from_settings(settings)
        self.llm = llm or NarratorLLM.from_settings(settings)

    def cycle(self) -> CycleResult:
        """Summarise every pending incident; stop at the first sign the model server is down
        (a refusal only concerns its incident: summarise() stores the template and the cycle goes on)."""
        result = CycleResult()
        pending = pending_incidents(self.store)
        services = known_services(self.store) if pending else set()
        for n, incident_id in enumerate(pending):
            try:
                facts = build_facts(self.store, incident_id, self.settings.bronze_dir)
            except KeyError:
                continue  # deleted meanwhile (retention)
            started = time.monotonic()
            try:
                summary = summarise(facts, self.llm, services)
            except LLMUnavailable as exc:
                result.llm_down = str(exc)
                log.warning(
                    "model server unavailable; incidents stay pending", pending=len(pending) - n, error=str(exc)
                )
                break
            store_summary(self.store, summary)
            observe_summary(summary, time.monotonic() - started)
            result.summarised += 1
            result.llm += summary.generated_by == "llm"
            result.template += summary.generated_by == "template"
            log.info(
                "incident summarised",
                incident_id=incident_id,
                service=facts.service,
                generated_by=summary.generated_by,
                seconds=round(time.monotonic() - started, 2),
                progress=f"{n + 1}/{len(pending)}",
            )
        result.pending = len(pending_incidents(self.store))
        metrics.BACKLOG.labels(metrics.NARRATOR).set(result.pending)
        if result.llm_down:
            metrics.CYCLE_FAILURES.labels(metrics.NARRATOR).inc()
        self.heartbeat(result)
        return result

    def heartbeat(self, result: CycleResult) -> None:
        detail = f"backlog={result.pending} model_server={'down' if result.llm_down else 'ok'} summarised={result.summarised}"
        self.store.heartbeat(tables.NARRATOR_HEARTBEAT, detail=detail)

    def run_forever(self, stop: threading.Event) -> None:
        """Every NARRATE_INTERVAL_SECONDS; back off (up to 5 min) while the model server is down."""
        interval = self.settings.narrate_interval_seconds
        metrics.serve(metrics.NARRATOR, self.settings)
        run_loop(
            metrics.instrumented(metrics.NARRATOR, self._logged_cycle),
            interval,
            stop=stop,
            failed=lambda r: bool(r.llm_down),
            max_backoff=max(interval, 300),
            logger=log,
        )

    def _logged_cycle(self) -> CycleResult:
        result = self.cycle()
        if result.summarised or result.llm_down:
            log.info(result.line())
        return result
