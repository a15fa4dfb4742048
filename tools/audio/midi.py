"""A Standard MIDI File writer (format 0) and the little tunes the audio data maker renders.

Just enough of the format for fluidsynth: one track, program changes, notes on one channel (the
drums on channel 10). Melodies are random walks on a scale, seeded, so each recording is new
while its instrument (the concept) stays the same.
"""
from __future__ import annotations

import random
import struct

TICKS_PER_BEAT = 480
DRUM_CHANNEL = 9

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
PENTATONIC = (0, 2, 4, 7, 9)


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


TEMPO_BPM = 120  # of the written file: 960 ticks a second
TICKS_PER_SECOND = TICKS_PER_BEAT * TEMPO_BPM // 60


def midi_bytes(events: list[tuple[float, bytes]]) -> bytes:
    """events: (seconds, message bytes) -> a format-0 SMF."""
    track = bytearray()
    track += _vlq(0) + b"\xff\x51\x03" + int(60_000_000 / TEMPO_BPM).to_bytes(3, "big")
    last = 0
    ticks = [(int(round(seconds * TICKS_PER_SECOND)), message) for seconds, message in events]
    for tick, message in sorted(ticks, key=lambda event: (event[0], event[1][0] & 0xF0 != 0x80)):
        track += _vlq(tick - last) + message
        last = tick
    track += _vlq(TICKS_PER_BEAT) + b"\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_BEAT) + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def _note(events, channel: int, start: int, length: int, pitch: int, velocity: int, seconds_per_tick: float) -> None:
    pitch = max(0, min(127, pitch))
    events.append((start * seconds_per_tick, bytes([0x90 | channel, pitch, velocity])))
    events.append(((start + max(1, length)) * seconds_per_tick, bytes([0x80 | channel, pitch, 0])))


def melody(program: int, rng: random.Random, seconds: float, low: int, high: int,
           chords: bool) -> tuple[list[tuple[float, bytes]], float]:
    """A random tune for GM `program` between MIDI pitches low..high: (events in seconds, length in seconds)."""
    tempo = rng.uniform(70, 150)
    per_tick = 60 / (tempo * TICKS_PER_BEAT)
    scale = rng.choice((MAJOR, MINOR, PENTATONIC))
    root = rng.randrange(low, max(low + 1, high - 12))
    degrees = [root + 12 * octave + step for octave in range(-1, 4) for step in scale]
    degrees = [pitch for pitch in degrees if low <= pitch <= high] or [root]
    events: list[tuple[float, bytes]] = [(0.0, bytes([0xC0, program]))]
    tick, index = 0, rng.randrange(len(degrees))
    end = int(seconds / per_tick)
    sustained = rng.random() < 0.3  # long notes (pads, organs, strings) or a livelier line
    while tick < end:
        ticks = int(rng.choice((1, 2, 4) if sustained else (0.25, 0.5, 0.5, 1, 1, 2)) * TICKS_PER_BEAT)
        index = max(0, min(len(degrees) - 1, index + rng.choice((-2, -1, -1, 0, 1, 1, 2))))
        velocity = rng.randrange(60, 120)
        if chords and rng.random() < 0.4:
            for offset in (0, 2, 4):
                _note(events, 0, tick, ticks, degrees[min(len(degrees) - 1, index + offset)], velocity - 10, per_tick)
        else:
            _note(events, 0, tick, ticks, degrees[index], velocity, per_tick)
        tick += ticks
    return events, tick * per_tick + 1.0


def drums(notes: tuple[int, ...], rng: random.Random, seconds: float,
          pattern: str) -> tuple[list[tuple[float, bytes]], float]:
    """Percussion on channel 10: `pattern` "beat" (kick, snare, hats), "roll" or "hits" of `notes`."""
    tempo = rng.uniform(80, 160)
    per_tick = 60 / (tempo * TICKS_PER_BEAT)
    end = int(seconds / per_tick)
    events: list[tuple[float, bytes]] = []
    step = TICKS_PER_BEAT // (4 if pattern == "roll" else 2)
    tick = 0
    while tick < end:
        beat = tick // step
        if pattern == "beat":
            if beat % 4 == 0:
                _note(events, DRUM_CHANNEL, tick, step, 36, rng.randrange(90, 127), per_tick)
            if beat % 4 == 2:
                _note(events, DRUM_CHANNEL, tick, step, rng.choice((38, 40)), rng.randrange(90, 127), per_tick)
            _note(events, DRUM_CHANNEL, tick, step, rng.choice((42, 42, 44, 46)), rng.randrange(50, 90), per_tick)
            if beat % 16 == 0 and rng.random() < 0.5:
                _note(events, DRUM_CHANNEL, tick, step, 49, 100, per_tick)
        elif pattern == "roll":
            _note(events, DRUM_CHANNEL, tick, step, rng.choice(notes), rng.randrange(60 + beat % 40, 127), per_tick)
        elif rng.random() < 0.8:
            _note(events, DRUM_CHANNEL, tick, step, rng.choice(notes), rng.randrange(70, 127), per_tick)
        tick += step * (1 if pattern != "hits" else rng.choice((1, 2, 2, 4)))
    return events, tick * per_tick + 1.5


def shifted(events: list[tuple[float, bytes]], offset: float) -> list[tuple[float, bytes]]:
    return [(seconds + offset, message) for seconds, message in events]
