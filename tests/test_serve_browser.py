"""The page of `malsori serve` in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium with the driver path pinned) with a fake microphone playing a demo clip. The microphone path (AudioWorklet,
16 kHz, websocket) must show live partials, then a final close to what the model transcribes offline for the clip
(the browser's resampling and the silence around the clip move a few characters of this weak model); the file
upload path sends the clip's own samples, so its final must equal the offline transcript exactly.

Set MALSORI_SCREENSHOT=path.png to keep a screenshot of the page (docs/serving_page.png is one)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from malsori.audio import load_audio
from malsori.commands.demo import DEMO_AUDIO, RELEASED
from malsori.data.manifest import read_manifest
from malsori.metrics import error_rates
from malsori.pretrained import RELEASED_MODELS, Recognizer

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CLIP = 6  # demo clip the released model transcribes best ("I accumulated a large collection ...")
MIC_CER_BOUND = 0.35  # measured 14.5% against the offline transcript; a broken path (wrong rate, lost audio) is ~80-100%


def _missing() -> str:
    if not (CHROMIUM.is_file() and DRIVER.is_file()):
        return "needs Debian's chromium and chromium-driver (.ci/run installs them: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as e:
        return f"needs selenium and websockets (pip install -e '.[dev]'): {e}"
    if not (RELEASED_MODELS / RELEASED / "model.safetensors").is_file():
        return f"no released model in {RELEASED_MODELS / RELEASED}"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "-")


def _browser(fake_audio: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={fake_audio}%noloop", "--window-size=900,640"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(DRIVER)), options=opts)  # a pinned driver: no Selenium Manager download


def _wait(driver, condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; status: {driver.find_element('id', 'status').text!r}")


def test_page_transcribes_microphone_and_file_in_chromium(tmp_path):
    from helpers.serving import ServerThread
    from malsori.serve.config import ServeConfig

    rec = Recognizer.load(RELEASED, device="cpu")
    utt = read_manifest(DEMO_AUDIO, strict=True).utterances[CLIP]
    clip_wav, fake_wav = tmp_path / "clip.wav", tmp_path / "mic.wav"
    sf.write(clip_wav, load_audio(DEMO_AUDIO.parent / utt.audio), 16000, subtype="PCM_16")
    clip = load_audio(clip_wav)  # what the page's file upload will send, sample for sample
    silence = np.zeros(16000, np.float32)
    sf.write(fake_wav, np.concatenate([silence, clip, silence, silence, silence]), 16000, subtype="PCM_16")
    offline = rec.transcribe(clip).text
    assert offline

    finals = lambda d: [e.text for e in d.find_elements("css selector", "#finals li .text")]  # noqa: E731
    with ServerThread(rec, ServeConfig(port=0)) as port:
        driver = _browser(fake_wav)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            driver.find_element("id", "start").click()
            partials = set()

            def first_final(d):
                partials.add(d.find_element("id", "partial").text)
                return finals(d)

            mic = _wait(driver, first_final, 60, "a final result from the microphone")[0]
            driver.find_element("id", "stop").click()
            _wait(driver, lambda d: d.find_element("id", "status").text == "finished", 30, "the stream to finish")
            driver.find_element("id", "file").send_keys(str(clip_wav))
            _wait(driver, lambda d: d.find_element("id", "status").text == "finished clip.wav", 60, "the file's results")
            shot = os.environ.get("MALSORI_SCREENSHOT")
            driver.save_screenshot(str(tmp_path / "page.png"))
            if shot:
                shutil.copyfile(tmp_path / "page.png", shot)
            uploaded = finals(driver)[-1]
        finally:
            driver.quit()
    assert len(partials - {""}) >= 2, "the page showed no live partial results"
    assert error_rates([offline], [mic]).cer <= MIC_CER_BOUND, (mic, offline)
    assert uploaded == offline
