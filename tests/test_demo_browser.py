"""The browser demo in a real browser: headless Chromium (Debian's package, driven by Playwright) opens the running
page, uploads a real POP909 song, clicks Predict and reads the emotion classes and the melody download from the page;
then a file that is not MIDI, whose message it reads from the page. Screenshots are kept as test artefacts
(``$ADV_MIDIBERT_ARTIFACTS``, else a pytest folder; the path is printed).

Opt-in: Chromium is not in CI. Run it with one command, which installs what it needs: ``bash demo/browser_test.sh``
(or set ``ADV_MIDIBERT_BROWSER_TESTS=1`` with chromium and playwright installed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from adversarial_midibert.training import finetune

from script_env import as_cached_hub_repo, free_port, script_env

CHROMIUM = os.environ.get("ADV_MIDIBERT_CHROMIUM", "/usr/bin/chromium")
if os.environ.get("ADV_MIDIBERT_BROWSER_TESTS") != "1":
    pytest.skip("browser test is opt-in: bash demo/browser_test.sh (or ADV_MIDIBERT_BROWSER_TESTS=1)",
                allow_module_level=True)
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set ADV_MIDIBERT_CHROMIUM)",
                allow_module_level=True)
pytest.importorskip("gradio", reason="the demo needs its extra: pip install '.[demo]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser is Debian's)")
HUB_IDS = {"classifier": "my-org/adv-midibert-emotion", "melody": "my-org/adv-midibert-melody"}


def _finetune(task, data_root, folder, max_files, epochs):
    """A tiny model fine-tuned briefly on a few real pieces, by examples/finetune.py: weak, but its own prediction."""
    from adversarial_midibert.data import build_recipe, save

    save(build_recipe(task, data_root=data_root, max_seq_len=64, max_files=max_files, seed=0), folder / "data")
    finetune.main([
        "--dataset", str(folder / "data"), "--from_scratch", "--preset", "tiny", "--output_dir", str(folder / "model"),
        "--num_train_epochs", str(epochs), "--per_device_train_batch_size", "16", "--learning_rate", "2e-3",
        "--metric_for_best_model", "f1_macro", "--seed", "0", "--cpu",  # macro-F1: not the majority class alone
    ])
    return folder / "model"


@pytest.fixture(scope="module")
def models(data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-models")
    return {"classifier": _finetune("emotion", data_root, root / "emotion", 16, 4),
            "melody": _finetune("melody", data_root, root / "melody", 6, 8)}


@pytest.fixture(scope="module")
def page_url(models, repo_root, tmp_path_factory):
    """The demo served by ``python demo/app.py --model ORG/MELODY --model ORG/EMOTION`` on a free port, as a Space
    runs it: the models are Hub ids, served offline from a Hub cache holding the fine-tuned folders."""
    port, work = free_port(), tmp_path_factory.mktemp("browser-server")
    env = script_env(repo_root)
    env["HF_HUB_CACHE"] = str(work / "hub_cache")
    for role in ("melody", "classifier"):
        as_cached_hub_repo(models[role], work / "hub_cache", HUB_IDS[role])
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "demo/app.py", "--model", HUB_IDS["melody"],
                                   "--model", HUB_IDS["classifier"], "--port", port],
                                  cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the demo did not start ({server.poll()=}):\n{log_path.read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    folder = Path(os.environ.get("ADV_MIDIBERT_ARTIFACTS") or tmp_path_factory.mktemp("browser-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser test artefacts (screenshots): {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _song(data_root):
    song_id = json.loads((data_root / "splits" / "pop909.json").read_text())["test"][0]  # not trained on
    return data_root / "POP909" / song_id / f"{song_id}.mid"


def _upload_and_predict(page, path):
    page.locator("#midi-file input[type=file]").set_input_files(str(path))
    page.locator(f'#midi-file a[download="{path.name}"]').wait_for(timeout=60_000)  # on the server: uploaded
    page.locator("#predict").click()


def test_a_real_song_in_the_browser(browser, page_url, models, data_root, artefacts, tmp_path):
    from adversarial_midibert.pipelines import midi_pipeline

    song = _song(data_root)
    page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page.goto(page_url)
    _upload_and_predict(page, song)
    classes = page.locator("#classes")
    classes.get_by_text(re.compile(r"^\d+%$")).first.wait_for(timeout=120_000)
    page.locator("#piano-roll img").wait_for(timeout=60_000)
    page.wait_for_function("document.querySelector('#piano-roll img').naturalWidth > 0", timeout=60_000)
    # The page shows the model's own prediction: its top class, and every class with its rounded probability.
    expected = midi_pipeline("midi-classification", model=str(models["classifier"]), device="cpu")(str(song))
    text = classes.inner_text()
    shown = dict(re.findall(r"^(Q[1-4])\s*\n\s*(\d+)%\s*$", text, re.M))
    assert set(shown) == {"Q1", "Q2", "Q3", "Q4"}, text
    for item in expected["scores"]:
        assert abs(int(shown[item["label"]]) - 100 * item["score"]) <= 0.51, (item, text)
    heading, top = [line.strip() for line in text.strip().splitlines()[:2]]
    assert heading == "Predicted class" and top == expected["label"], text
    summary = page.locator("#summary").inner_text()
    assert f"{song.name}:" in summary and f"{expected['label']} ({expected['score']:.0%})" in summary, summary
    assert page.locator("#classifier input, #classifier textarea").first.input_value() == HUB_IDS["classifier"]
    # The melody download: a MIDI file holding every note of the song, one track per predicted class.
    link = page.locator(f'#melody-midi a[download="{song.stem}.melody.mid"]')
    link.wait_for(timeout=30_000)
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    import symusic

    written = symusic.Score(str(saved))
    assert saved.name == f"{song.stem}.melody.mid" and written.note_num() == symusic.Score(str(song)).note_num()
    assert {t.name for t in written.tracks} <= {"melody", "bridge", "accompaniment"}
    page.screenshot(path=str(artefacts / "demo-prediction.png"), full_page=True)
    assert "Traceback" not in page.content()
    page.close()


def test_a_file_that_is_not_midi_in_the_browser(browser, page_url, artefacts, tmp_path):
    bad = tmp_path / "my notes.mid"
    bad.write_text("Verse 1: C G Am F, not a MIDI file\n")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_url)
    _upload_and_predict(page, bad)
    message = page.get_by_text(re.compile(r"my notes\.mid: not a MIDI file")).first
    message.wait_for(timeout=60_000)
    text = message.inner_text()
    assert text.startswith("my notes.mid: not a MIDI file (starts with b'Vers', expected b'MThd'"), text
    assert str(tmp_path) not in text and "Traceback" not in page.content()
    page.wait_for_timeout(1000)  # the error toast fades in: let the screenshot show it whole
    page.screenshot(path=str(artefacts / "demo-bad-file.png"), full_page=True)
    page.close()
