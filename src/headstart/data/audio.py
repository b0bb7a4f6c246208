"""Read audio files for speech models: float32 mono in [-1, 1] at the model's sample rate.

Decoding is done by ``soundfile`` (libsndfile: WAV, FLAC, OGG/Vorbis and, from libsndfile 1.1,
MP3) and resampling by ``scipy.signal.resample_poly`` (polyphase FIR, anti-aliased), both from the
``audio`` extra (``pip install 'headstart[audio]'``); they are imported only when audio is read.

Every problem with a file becomes one :class:`~headstart.errors.BadInput` line naming the file (and
the row that pointed to it, when the caller passes ``origin``) and saying what to do: a missing
file, a format outside :data:`AUDIO_SUFFIXES`, a file libsndfile cannot decode (corrupt, truncated,
not audio), no samples, only silence, NaN/inf samples, a recording longer than ``max_seconds``, or
a sample rate outside [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`]. Nothing is padded,
trimmed or skipped silently.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import BadInput

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
"""File suffixes read (compared lower-cased)."""
SAMPLE_RATE = 16000
"""Sample rate (Hz) of the speech models headstart adapts (wav2vec 2.0, HuBERT, Whisper...)."""
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
"""Source sample rates accepted (Hz): below 1 kHz nothing of speech survives; above 768 kHz the
header is almost certainly wrong."""
SILENCE_PEAK = 1e-4
"""A recording whose absolute peak is below this (1e-4 of full scale, -80 dBFS: about 3 steps of
16-bit audio) is refused as silent: digital silence or dither, nothing a model can transcribe."""

_FORMATS = ", ".join(sorted(AUDIO_SUFFIXES))


def read_audio(
    path: str | Path,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = 30.0,
    origin: str | None = None,
) -> np.ndarray:
    """The samples of an audio file as a float32 mono array in [-1, 1] at ``sample_rate`` Hz.

    Channels are averaged to mono. A different source rate is resampled with
    ``resample_poly(x, up, down)``, ``up / down = sample_rate / source rate`` reduced by their gcd
    (so 44.1 kHz -> 16 kHz is 160 / 441); a 30 s clip is ``30 * sample_rate`` samples afterwards.
    Integer files are scaled by libsndfile (int16 by 1/32768); float files and the resampler's
    small overshoot at full scale are clipped to [-1, 1].

    ``max_seconds`` (None for no limit) refuses longer recordings before decoding them: speech
    models are trained on short clips and memory grows with length. ``origin`` (e.g.
    ``"train.csv line 12"``) is added to error messages. Raises :class:`BadInput` (one line, no
    traceback) for every problem listed in the module docstring, ``ValueError`` for a bad
    ``sample_rate`` or ``max_seconds`` argument.
    """
    integer = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
    if not integer or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate must be an integer number of Hz in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], e.g. 16000 (got {sample_rate!r})"
        )
    number = isinstance(max_seconds, (int, float)) and not isinstance(max_seconds, bool)
    if max_seconds is not None and (not number or not max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds or None for no limit (got {max_seconds!r})")
    sf, signal = _backends()
    path = Path(path)
    where = _where(path, origin)
    info = _info(sf, path, where)
    source_rate = int(info.samplerate)
    seconds = info.frames / source_rate
    if max_seconds is not None and seconds > max_seconds:
        raise BadInput(
            f"{where} is {seconds:.1f} s long, over the {max_seconds:g} s limit: trim it or split it into clips of "
            f"at most {max_seconds:g} s (e.g. `ffmpeg -i {path.name} -f segment -segment_time {max_seconds:g} clip%03d.wav`)"
        )
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (RuntimeError, TypeError, ValueError, EOFError, OSError) as e:
        raise BadInput(f"{where} cannot be decoded ({_one_line(e)}): it is corrupt or truncated; re-export or convert it to WAV") from None
    if data.shape[0] == 0:
        raise BadInput(f"{where} has no samples (0 s of audio): re-record or re-export it, or remove it from the data")
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise BadInput(f"{where} has {bad} NaN or infinite samples: the file is damaged; re-export it (as 16-bit WAV or FLAC)")
    peak = float(np.abs(data).max())
    if peak < SILENCE_PEAK:
        level = f"{20 * math.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise BadInput(
            f"{where} is silent (peak {peak:.1e} of full scale, {level}; the threshold is {SILENCE_PEAK:g}): "
            "check the recording, or remove it from the data"
        )
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (frames,)
    if float(np.abs(mono).max()) < SILENCE_PEAK:
        raise BadInput(
            f"{where}: its {data.shape[1]} channels cancel out when averaged to mono (one is the other phase-inverted): "
            f"keep one channel (e.g. `ffmpeg -i {path.name} -af pan=mono|c0=c0 {path.stem}_mono.wav`)"
        )
    if source_rate != sample_rate:
        g = math.gcd(source_rate, int(sample_rate))
        mono = signal.resample_poly(mono, int(sample_rate) // g, source_rate // g)  # (ceil(frames * up / down),)
    return np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)


def audio_seconds(path: str | Path, *, origin: str | None = None) -> float:
    """Duration in seconds from the file's header, without decoding the samples (for planning
    and cost estimates). Raises :class:`BadInput` as :func:`read_audio` does for a missing,
    unsupported or unreadable file, or a sample rate outside the accepted range."""
    sf, _ = _backends()
    path = Path(path)
    info = _info(sf, path, _where(path, origin))
    return info.frames / info.samplerate


def _info(sf, path: Path, where: str):
    """The file's soundfile header after the checks every reader shares: it exists, is a file,
    has a supported suffix, libsndfile recognises it and its sample rate is in range."""
    if not path.exists():
        raise BadInput(f"{where} not found: check the path (a relative path is read from {Path.cwd()})")
    if not path.is_file():
        raise BadInput(f"{where} is a folder, not an audio file: give one {_FORMATS} file")
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise BadInput(
            f"{where}: {path.suffix or 'no suffix'} is not a supported audio format; use one of {_FORMATS} "
            f"(e.g. `ffmpeg -i {path.name} {path.stem}.wav`)"
        )
    try:
        info = sf.info(str(path))
    except (RuntimeError, TypeError, ValueError, EOFError, OSError) as e:
        raise BadInput(
            f"{where} cannot be read as audio ({_one_line(e)}): it is corrupt, truncated or not a {path.suffix.lower()} file; "
            f"re-export it or convert it to one of {_FORMATS}"
        ) from None
    rate = int(info.samplerate)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadInput(
            f"{where} declares a sample rate of {rate} Hz, outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz: "
            f"the header is wrong or this is not speech audio; re-export it at {SAMPLE_RATE} Hz"
        )
    if info.frames == 0:
        raise BadInput(f"{where} has no samples (0 s of audio): re-record or re-export it, or remove it from the data")
    return info


def _backends():
    """``(soundfile, scipy.signal)``, or a BadInput saying how to install them."""
    try:
        import soundfile
        from scipy import signal
    except ImportError as e:
        raise BadInput(f"reading audio needs soundfile and scipy ({e.name} is not installed): pip install 'headstart[audio]'") from None
    return soundfile, signal


def _where(path: Path, origin: str | None) -> str:
    return f"audio file {path}" + (f" ({origin})" if origin else "")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:160]
