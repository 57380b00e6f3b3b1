"""Prometheus metrics of one app instance: sessions, active work, per-turn latency, errors.

Each app gets its own registry, so several apps in one process (tests) never clash.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("voicechat_sessions_active", "Open conversations.", registry=r)
        self.sessions_refused = Counter(
            "voicechat_sessions_refused", "Conversations refused because the server was full.", registry=r
        )
        self.replies = Gauge(
            "voicechat_replies_active", "Assistant replies being generated (LLM and/or TTS).", registry=r
        )
        self.llm_streams = Gauge("voicechat_llm_streams_active", "Open LLM response streams.", registry=r)
        self.turns = Counter("voicechat_turns", "Assistant turns started.", registry=r)
        self.barge_ins = Counter("voicechat_barge_ins", "Assistant turns interrupted by the user.", registry=r)
        self.errors = Counter("voicechat_errors", "Errors sent to clients, by code.", ["code"], registry=r)
        self.first_audio = Histogram(
            "voicechat_first_audio_seconds",
            "End of user speech to first assistant audio frame sent.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_first_token = Histogram(
            "voicechat_llm_first_token_seconds", "LLM request to first token.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.tts_first_chunk = Histogram(
            "voicechat_tts_first_chunk_seconds",
            "TTS request to first audio chunk.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stt = Histogram(
            "voicechat_stt_seconds", "Final transcription after end of turn.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.tts_streams = Gauge("voicechat_tts_streams_active", "TTS streams generating audio.", registry=r)
        self.tts_load = Gauge(
            "voicechat_tts_load",
            "TTS streams as a share of what the engine keeps in real time (1 = full: more are refused).",
            registry=r,
        )

    def track_tts_streams(self, count: Callable[[], int]) -> None:
        """Read the TTS engine's live stream count at each scrape."""
        self.tts_streams.set_function(count)

    def track_tts_load(self, load: Callable[[], float]) -> None:
        """Read the TTS engine's load (active streams / its capacity) at each scrape."""
        self.tts_load.set_function(load)

    def track_tts_stages(self, snapshot: Callable[[], dict[tuple[str, str], tuple[float, int]]]) -> None:
        """Export the TTS engine's seconds per (thread, stage) (tts/stages.py) at each scrape."""
        self.registry.register(_StageSeconds(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StageSeconds:
    """A collector: the TTS engine's busy and idle seconds per thread and stage, read at each scrape."""

    def __init__(self, snapshot: Callable[[], dict[tuple[str, str], tuple[float, int]]]):
        self._snapshot = snapshot

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        family = CounterMetricFamily(
            "voicechat_tts_stage_seconds",
            "Seconds the TTS engine's threads spent per stage (T3: prefill, sample, forward; S3Gen lanes: "
            "flow, vocode, watermark; idle: waiting for work).",
            labels=["thread", "stage"],
        )
        for (thread, stage), (seconds, _) in sorted(self._snapshot().items()):
            family.add_metric([thread, stage], seconds)
        yield family
