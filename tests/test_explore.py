"""python -m vae_lab.explore: the page in a real browser (Debian's Chromium, driven by Playwright)
on short real runs, its in-page decoder against torch's, and the one-line refusals.

The browser tests need /usr/bin/chromium (.ci/run installs it; ``apt-get install chromium``) and
are skipped without it.
"""
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import DATA_ROOT, REPO, TINY_RUN, make_model
import vae_lab
from vae_lab.errors import VaeLabError
from vae_lab.explore import build, check_decoder, decoder_layers
from vae_lab.explore.__main__ import main, make_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
NEXT_FRAME = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser):  # first among a test's fixtures: without Chromium, it skips before any run trains
    """open_page(url) -> a loaded explorer page; the test fails on any error the page reports."""
    pages, errors = [], []

    def open_(url):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(url)
        page.wait_for_function("window.vaeLab && window.vaeLab.ready", timeout=20_000)
        pages.append(page)
        return page

    yield open_
    for page in pages:
        page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, short_runs):
    """A sweep folder of two short runs, the dense z=20 (a PCA map, 20 sliders) and the conv z=2
    one, and its page written by --static: (sweep folder, index.html)."""
    folder = tmp_path_factory.mktemp("sweep")
    for name, run in (("0-dense-bce-z20", "dense-bce"), ("1-conv-mse-z2", "conv-mse-z2")):
        (folder / name).symlink_to(short_runs(run), target_is_directory=True)
    (folder / "multirun.yaml").write_text("a sweep's own file: not a run\n")
    out = tmp_path_factory.mktemp("page") / "explorer"
    main([str(folder), "--static", str(out)])
    return folder, out / "index.html"


def torch_images(folder, z, label=None) -> np.ndarray:
    """What the run's model decodes from codes z (B, z_dim): images (B, C·H·W) in [0, 1]."""
    model = vae_lab.load_run(folder).model
    y = None if label is None else torch.full((len(z),), label)
    with torch.no_grad():
        return model.likelihood.mean(model.decode(torch.as_tensor(z, dtype=torch.float32), y)).flatten(1).numpy()


def decoded_pixels(page, column: int) -> np.ndarray:
    """The grey levels (0-255) of a column's decoded image as drawn on its canvas, (H·W,)."""
    rgba = page.evaluate("""i => { const c = document.querySelectorAll('.column')[i].querySelector('canvas.decoded');
                                   return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""", column)
    return np.array(rgba).reshape(-1, 4)[:, 0]


@pytest.mark.slow  # a browser, and runs trained for it
def test_the_page_decodes_as_torch_and_within_a_frame(open_page, sweep):
    folder, index = sweep
    page = open_page(index.as_uri())  # from disk: no server
    assert page.locator(".column").count() == 2  # the sweep's two runs, its own files left out
    assert page.locator(".column").nth(0).locator("input[type=range]").count() == 20
    assert page.locator(".column").nth(1).locator("input[type=range]").count() == 2
    for column, run in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        z_dim = page.evaluate("i => vaeLab.columns[i].run.z_dim", column)
        z = np.random.default_rng(column).normal(0, 1.5, (4, z_dim))
        in_page = np.array([page.evaluate("([i, z]) => vaeLab.decode(i, z)", [column, code.tolist()]) for code in z])
        assert np.abs(in_page - torch_images(run, z)).max() < 1e-4
        # what the canvas shows is the model's image of the column's code, to the rounding to 0-255
        code = np.array([page.evaluate("i => Array.from(vaeLab.columns[i].z)", column)])
        assert np.abs(decoded_pixels(page, column) - 255 * torch_images(run, code)[0]).max() <= 1
        assert page.evaluate("i => vaeLab.timeDecode(i, 50)", column) < 100  # ms per image (about 1 ms)
    assert page.evaluate("vaeLab.columns[0].run.map.points.length") == 2000


@pytest.mark.slow  # a browser, and runs trained for it
def test_a_slider_and_the_map_redraw_every_column_together(open_page, sweep):
    page = open_page(sweep[1].as_uri())
    columns = page.locator(".column")
    before = [decoded_pixels(page, i) for i in range(2)]
    columns.nth(0).locator("input[data-rank='0']").fill("2.5")  # each run's most informative dimension
    page.evaluate(NEXT_FRAME)
    after = [decoded_pixels(page, i) for i in range(2)]
    assert all(np.abs(a.astype(int) - b).sum() > 0 for a, b in zip(after, before))
    assert columns.nth(1).locator("input[data-rank='0']").input_value() == "2.5"
    for i in range(2):  # the slider set that dimension of the column's code
        dimension = page.evaluate("i => vaeLab.columns[i].run.order[0]", i)
        assert page.evaluate("([i, d]) => vaeLab.columns[i].z[d]", [i, dimension]) == 2.5

    box = columns.nth(0).locator("canvas.map").bounding_box()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.2 * box["height"])  # hovering decodes the point
    page.evaluate(NEXT_FRAME)
    hovered = [decoded_pixels(page, i) for i in range(2)]
    assert all(np.abs(h.astype(int) - a).sum() > 0 for h, a in zip(hovered, after))
    page.mouse.move(0, 0)  # off the map: back to the sliders' code
    page.evaluate(NEXT_FRAME)
    assert all(np.array_equal(decoded_pixels(page, i), after[i]) for i in range(2))

    page.locator("#together").uncheck()  # apart, a column moves alone
    columns.nth(0).locator("input[data-rank='0']").fill("-2")
    page.evaluate(NEXT_FRAME)
    assert not np.array_equal(decoded_pixels(page, 0), after[0])
    assert np.array_equal(decoded_pixels(page, 1), after[1])


@pytest.mark.slow  # a browser, and runs trained for it
def test_the_server_serves_the_page_on_localhost(open_page, short_runs):
    """python -m vae_lab.explore <run> --port 0: the address it prints serves the page until stopped."""
    env = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "vae_lab.explore", str(short_runs("conv-mse-z2")), "--port", "0"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not (lines and lines[-1].startswith("serving")):
            line = server.stdout.readline()
            assert line, server.stderr.read()[-2000:]
            lines.append(line)
        address = re.search(r"http://127\.0\.0\.1:\d+/", lines[-1]).group()
        page = open_page(address)
        assert page.locator(".column").count() == 1
        assert page.locator(".column h2").inner_text() == short_runs("conv-mse-z2").name
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow  # a browser, and runs trained for it
def test_a_cvae_draws_the_chosen_label(open_page, short_runs, tmp_path):
    run = short_runs("cvae-bce")
    page = open_page(build([run], tmp_path / "page", log=lambda line: None).as_uri())
    choice = page.locator("select.label")
    assert choice.locator("option").count() == 10
    before = decoded_pixels(page, 0)
    choice.select_option("7" if choice.input_value() != "7" else "3")
    page.evaluate(NEXT_FRAME)
    assert not np.array_equal(decoded_pixels(page, 0), before)
    z = np.random.default_rng(0).normal(size=(3, 20))
    in_page = np.array([page.evaluate("z => vaeLab.decode(0, z, 7)", code.tolist()) for code in z])
    assert np.abs(in_page - torch_images(run, z, label=7)).max() < 1e-4


@pytest.mark.slow  # a browser, and runs trained for it
def test_a_learned_prior_shows_its_samples(open_page, tmp_path, data_root):
    run = vae_lab.train_run("model=dense", "z_dim=2", "prior=mog", "epochs=1", *TINY_RUN, "callbacks.figures=null",
                            output_dir=str(tmp_path / "run"))
    page = open_page(build([run.folder], tmp_path / "page", log=lambda line: None).as_uri())
    samples = page.evaluate("""() => { const c = document.querySelector('canvas.samples');
                                       return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    assert len(samples) == 4 * 16 * 28 * 28 and np.array(samples).reshape(-1, 4)[:, 0].std() > 0
    assert page.locator(".column").inner_text().count("samples of its prior (mog)") == 1


@pytest.mark.parametrize("folder", ["missing", "empty", "foreign"])
def test_a_path_that_is_no_run_gives_one_line(folder, tmp_path, capsys):
    path = tmp_path / folder
    if folder != "missing":
        path.mkdir()
    if folder == "foreign":
        (path / "notes.txt").write_text("not a run\n")
        (path / "data").mkdir()
        (path / "data" / "x.bin").write_bytes(os.urandom(64))
    with pytest.raises(SystemExit) as refusal:
        main([str(path), "--static", str(tmp_path / "out")])
    message = str(refusal.value.code)
    assert message.startswith(f"error: {path}: ") and "\n" not in message
    assert ("no such" in message) == (folder == "missing")
    assert not (tmp_path / "out").exists() and capsys.readouterr().out == ""


def test_a_page_is_not_written_over_other_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text('{"status": "finished"}')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("mine\n")
    message = f"error: {tmp_path / 'out'} exists and is not an explorer folder; give a new or empty folder"
    with pytest.raises(SystemExit, match=f"^{re.escape(message)}$"):
        main([str(run), "--static", str(tmp_path / "out")])  # refused before the run is read
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["thesis.tex"]


def test_a_refusal_is_the_only_line_the_process_prints(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vae_lab.explore", str(tmp_path / "missing")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'missing'}: no such run folder, sweep folder or checkpoint file"]


def test_a_decoder_the_page_cannot_compute_is_refused():
    model = make_model("dense", z_dim=2)
    assert len(decoder_layers(model, "bce")) == 3  # 2 -> 128 -> 256 -> 784
    with pytest.raises(VaeLabError, match=r"^its likelihood is 'poisson'; the explorer draws the image means of bce and mse only$"):
        decoder_layers(model, "poisson")
    model.decoder = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 784))
    with pytest.raises(VaeLabError, match=r"^its decoder \(Linear Tanh Linear\) is not a stack of Linear layers"):
        decoder_layers(model, "bce")
    model.decoder = nn.Sequential(nn.Linear(3, 784))
    with pytest.raises(VaeLabError, match="maps 3 inputs to 784 outputs; the explorer needs z_dim"):
        decoder_layers(model, "bce")
    # the layers are right but the image mean is not their sigmoid: the check against torch says so
    model = make_model("dense", z_dim=2)
    model.likelihood.mean = lambda logits: logits.clamp(0, 1)
    with pytest.raises(VaeLabError, match="is not its decoder's Linear/ReLU stack followed by a sigmoid"):
        check_decoder(model, decoder_layers(model, "bce"))


def test_the_server_answers_on_localhost_only(tmp_path):
    (tmp_path / "index.html").write_text("<p>explorer</p>")
    server = make_server(tmp_path, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        import urllib.request

        host, port = server.server_address
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as answer:
            assert answer.read() == b"<p>explorer</p>"
        with pytest.raises(VaeLabError, match=rf"^cannot serve on 127.0.0.1:{port} "):
            make_server(tmp_path, port)  # taken
    finally:
        server.shutdown()
        server.server_close()
