"""Audio reading: formats, mono mixdown, resampling, and one BadInput line for every bad file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")
pytest.importorskip("scipy")

from headstart.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, SILENCE_PEAK, audio_seconds, read_audio  # noqa: E402
from headstart.errors import BadInput  # noqa: E402

FSDD_CLIP = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd" / "recordings" / "0_jackson_0.wav"


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_wav_8k_int16_is_resampled_to_16k_keeping_frequency(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, sine(440, 8000, 1.0), 8000, subtype="PCM_16")
    x = read_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert len(x) == SAMPLE_RATE  # 1 s at 16 kHz
    assert abs(peak_frequency(x, SAMPLE_RATE) - 440) <= 2
    assert 0.45 < np.abs(x).max() <= 0.51
    assert audio_seconds(path) == pytest.approx(1.0)


def test_flac_44k1_stereo_is_mixed_to_mono_and_resampled(tmp_path):
    left, right = sine(440, 44100, 0.5, 0.8), sine(440, 44100, 0.5, 0.2)
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 44100)
    x = read_audio(path)
    assert len(x) == 8000  # 22050 frames * 160 / 441
    assert abs(peak_frequency(x, SAMPLE_RATE) - 440) <= 4
    assert np.abs(x).max() == pytest.approx(0.5, abs=0.01)  # (0.8 + 0.2) / 2
    native = read_audio(path, sample_rate=44100)
    np.testing.assert_allclose(native, (left + right) / 2, atol=1e-4)  # no resampling at the native rate


def test_ogg_and_uppercase_suffix(tmp_path):
    path = tmp_path / "clip.OGG"
    sf.write(path, sine(300, 16000, 0.5), 16000, format="OGG", subtype="VORBIS")
    x = read_audio(path)
    assert abs(len(x) - 8000) <= 1
    assert abs(peak_frequency(x, SAMPLE_RATE) - 300) <= 4


def test_mp3(tmp_path):
    path = tmp_path / "clip.mp3"
    try:
        sf.write(path, sine(440, 16000, 1.0), 16000, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as e:
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write MP3: {e}")
    x = read_audio(path, sample_rate=8000)
    assert abs(len(x) - 8000) <= 1200  # MP3 adds encoder delay and padding
    assert abs(peak_frequency(x, 8000) - 440) <= 4


def test_full_scale_float_is_clipped_to_unit_range(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, sine(1000, 22050, 0.2, amplitude=1.5), 22050, subtype="FLOAT")
    x = read_audio(path)
    assert np.abs(x).max() <= 1.0


def test_read_only_folder_is_fine(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    sf.write(folder / "a.wav", sine(200, 16000, 0.25), 16000)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert len(read_audio(folder / "a.wav")) == 4000
        assert audio_seconds(folder / "a.wav") == pytest.approx(0.25)
    finally:
        os.chmod(folder, stat.S_IRWXU)


def test_missing_file_names_it_and_the_origin(tmp_path):
    with pytest.raises(BadInput) as err:
        read_audio(tmp_path / "nope.wav", origin="train.csv line 12")
    assert_one_line(err, "nope.wav", "train.csv line 12", "not found", "check the path")
    with pytest.raises(BadInput, match="nope.flac"):
        audio_seconds(tmp_path / "nope.flac")


def test_folder_is_refused(tmp_path):
    (tmp_path / "d.wav").mkdir()
    with pytest.raises(BadInput) as err:
        read_audio(tmp_path / "d.wav")
    assert_one_line(err, "d.wav", "folder")


def test_unsupported_suffix_lists_the_formats(tmp_path):
    path = tmp_path / "clip.aiff"
    sf.write(path, sine(440, 16000, 0.1), 16000, format="AIFF")
    with pytest.raises(BadInput) as err:
        read_audio(path)
    message = assert_one_line(err, "clip.aiff", ".aiff", "ffmpeg")
    assert all(s in message for s in AUDIO_SUFFIXES)


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(BadInput) as err:
        read_audio(path, origin="dev.csv line 3")
    assert_one_line(err, "notes.wav", "dev.csv line 3", "cannot be read as audio", ".flac")
    with pytest.raises(BadInput, match="notes.wav"):
        audio_seconds(path)


def test_truncated_wav(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, sine(440, 16000, 1.0), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30])  # header cut in half
    with pytest.raises(BadInput) as err:
        read_audio(path)
    assert_one_line(err, "cut.wav", "corrupt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(BadInput) as err:
        read_audio(path)
    assert_one_line(err, "empty.wav", "no samples")


def test_digital_silence_and_dither_are_refused(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(BadInput) as err:
        read_audio(path)
    assert_one_line(err, "silence.wav", "silent", "digital silence", str(SILENCE_PEAK))
    dither = np.random.default_rng(0).integers(-1, 2, size=16000).astype(np.int16)  # +-1 LSB
    sf.write(tmp_path / "dither.wav", dither, 16000, subtype="PCM_16")
    with pytest.raises(BadInput, match=r"dither\.wav is silent .*-90 dBFS"):
        read_audio(tmp_path / "dither.wav")
    quiet = (np.sin(np.arange(16000) / 5) * 10).astype(np.int16)  # 10 LSB, -70 dBFS: quiet, not silent
    sf.write(tmp_path / "quiet.wav", quiet, 16000, subtype="PCM_16")
    assert len(read_audio(tmp_path / "quiet.wav")) == 16000


def test_phase_inverted_stereo_is_refused(tmp_path):
    x = sine(440, 16000, 0.2)
    sf.write(tmp_path / "inverted.wav", np.stack([x, -x], axis=1), 16000, subtype="FLOAT")
    with pytest.raises(BadInput) as err:
        read_audio(tmp_path / "inverted.wav")
    assert_one_line(err, "inverted.wav", "cancel out", "keep one channel")


def test_too_long_says_the_length_and_how_to_split(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, sine(440, 8000, 3.0), 8000)
    with pytest.raises(BadInput) as err:
        read_audio(path, max_seconds=2, origin="train.csv line 7")
    assert_one_line(err, "long.flac", "train.csv line 7", "3.0 s long", "2 s limit", "split")
    assert len(read_audio(path, max_seconds=None)) == 48000
    assert audio_seconds(path) == pytest.approx(3.0)


def test_bad_sample_rates(tmp_path):
    path = tmp_path / "low.wav"
    sf.write(path, sine(100, 800, 1.0), 800)
    with pytest.raises(BadInput) as err:
        read_audio(path)
    assert_one_line(err, "low.wav", "800 Hz", "re-export")
    with pytest.raises(BadInput, match="800 Hz"):
        audio_seconds(path)
    with pytest.raises(ValueError, match="sample_rate"):
        read_audio(path, sample_rate=0)
    with pytest.raises(ValueError, match="max_seconds"):
        read_audio(path, max_seconds=0)


def test_nan_samples(tmp_path):
    x = sine(440, 16000, 0.1)
    x[10] = np.nan
    x[20] = np.inf
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(BadInput) as err:
        read_audio(tmp_path / "nan.wav")
    assert_one_line(err, "nan.wav", "2 NaN or infinite samples")


@pytest.mark.skipif(not FSDD_CLIP.is_file(), reason=f"needs the FSDD recording {FSDD_CLIP} (../shared/data beside the project)")
def test_real_fsdd_recording():
    info = sf.info(str(FSDD_CLIP))
    x = read_audio(FSDD_CLIP)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - round(info.frames * SAMPLE_RATE / info.samplerate)) <= 1
    assert 0.01 < np.abs(x).max() <= 1.0
    assert audio_seconds(FSDD_CLIP) == pytest.approx(info.duration)
