"""The audio backlog: coalesced, silence shed first, speech kept, "busy" said once per episode."""

from __future__ import annotations

import numpy as np

from voicechat.inbox import AudioInbox

RATE = 16000


def frame(seconds: float = 0.02, *, loud: bool) -> np.ndarray:
    n = int(seconds * RATE)
    return (np.sin(np.arange(n) * 0.1) * 8000).astype(np.int16) if loud else np.zeros(n, np.int16)


async def test_frames_are_taken_in_one_piece() -> None:
    inbox = AudioInbox(RATE)
    for _ in range(50):
        assert not inbox.put(frame(loud=True), client_playing=False)
    pcm, playing = await inbox.get()
    assert len(pcm) == 50 * 320 and not playing and inbox.backlog_s == 0


async def test_overload_sheds_silence_keeps_speech_and_says_busy_once() -> None:
    inbox = AudioInbox(RATE, shed_after_s=2.0, keep_silence_s=1.0)
    speech = [frame(loud=True) for _ in range(50)]  # 1 s
    told = [inbox.put(chunk, False) for chunk in speech]
    told += [inbox.put(frame(loud=False), False) for _ in range(250)]  # 5 s of silence
    told += [inbox.put(chunk, True) for chunk in speech]
    assert told.count(True) == 1  # said once
    pcm, playing = await inbox.get()
    loud = np.abs(pcm) > 0
    assert loud.sum() == 2 * sum(np.count_nonzero(chunk) for chunk in speech)  # every spoken sample kept
    assert 1.0 <= (len(pcm) - 2 * 50 * 320) / RATE <= 1.1  # the silence shortened to about keep_silence_s
    assert playing and inbox.shed_s > 3.5


async def test_a_new_episode_after_catching_up() -> None:
    inbox = AudioInbox(RATE, shed_after_s=1.0, keep_silence_s=0.5)
    assert any([inbox.put(frame(loud=False), False) for _ in range(100)])
    await inbox.get()  # backlog was over: still the same episode
    assert inbox.busy
    inbox.put(frame(loud=True), False)
    await inbox.get()  # caught up
    assert not inbox.busy
    assert any([inbox.put(frame(loud=False), False) for _ in range(100)])


async def test_memory_bound_drops_the_oldest() -> None:
    inbox = AudioInbox(RATE, shed_after_s=1.0, max_backlog_s=2.0)
    for _ in range(200):  # 4 s of speech
        inbox.put(frame(loud=True), False)
    assert inbox.backlog_s <= 2.0
    pcm, _ = await inbox.get()
    assert len(pcm) <= 2 * RATE
