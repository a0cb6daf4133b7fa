"""Notebook 2 in a real browser: JupyterLab, headless Chromium, a real download.

JupyterLab runs on 127.0.0.1 in a temporary folder holding notebook 2, whose
parameters point at the local registry. Playwright drives Debian's
``/usr/bin/chromium`` (``playwright install`` is never needed): it runs every
cell, chooses a platform in the form, clicks Download, waits for the progress
bar to finish, and the archive is then loaded with podman. A screenshot of the
form is kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import requests

from tests.support.demo import push_demo
from tests.support.images import Pusher
from tests.support.loaders import podman_inspect, podman_load
from tests.support.registry import free_port
from tests.test_notebooks import NOTEBOOKS, set_parameters

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOTEBOOK = "02_pick_and_download.ipynb"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
START_TIMEOUT = 60
WAIT_MS = 90_000


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 with a token, serving ``root``."""

    def __init__(self, root: Path, env: dict):
        self.root = root
        self.env = env
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root.parent / "jupyterlab.log"
        self.process = None

    def start(self) -> JupyterLab:
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--allow-root",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                answer = requests.get(self.api("status"), timeout=2)
                if answer.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"JupyterLab did not start:\n{self.log.read_text()[-3000:]}")

    def api(self, path: str) -> str:
        return f"{self.url}/api/{path}?token={self.token}"

    def stop(self) -> None:
        """Shut the kernels down, then the server (its process group if need be)."""
        if self.process is None:
            return
        try:
            for kernel in requests.get(self.api("kernels"), timeout=5).json():
                requests.delete(self.api(f"kernels/{kernel['id']}"), timeout=10)
        except requests.RequestException:
            pass
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


@pytest.fixture
def lab(registry, images, tmp_path):
    """JupyterLab serving a copy of notebook 2 pointed at the local registry."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    records, _ = push_demo(Pusher(registry.url), "browser/demo", "1")
    root = tmp_path / "lab"
    root.mkdir()
    notebook = nbformat.read(NOTEBOOKS / NOTEBOOK, as_version=4)
    set_parameters(
        notebook, REGISTRY=registry.host, IMAGE="browser/demo:1", OUTPUT_DIR="images"
    )
    nbformat.write(notebook, root / NOTEBOOK)
    env = os.environ | {
        "DGETKIT_CACHE": str(tmp_path / "cache"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
    }
    _quiet_settings(tmp_path / "settings")
    server = JupyterLab(root, env).start()
    try:
        yield server, records
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "runtime", ignore_errors=True)


def _quiet_settings(folder: Path) -> None:
    """User settings that keep the news question from covering the page."""
    settings = folder / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    notification = {"fetchNews": "false", "checkForUpdates": False}
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(notification))


def test_pick_a_platform_and_download_in_jupyterlab(lab, registry, loader_dir):
    from playwright.sync_api import expect, sync_playwright

    server, records = lab
    wanted = records["linux/arm64"]
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{server.url}/lab/tree/{NOTEBOOK}?token={server.token}")
            page.wait_for_selector(".jp-Notebook")
            _run_all_cells(page)

            form = page.locator(".widget-vbox", has_text="Download a container image")
            expect(form).to_be_visible()
            platform = form.locator(".widget-dropdown", has_text="Platform").locator(
                "select"
            )
            expect(platform.locator("option")).to_have_count(2)
            platform.select_option("linux/arm64")
            saved_as = form.locator(".widget-text", has_text="Save as").locator("input")
            expect(saved_as).to_have_value(
                "images/demo_1_linux-arm64.tar", timeout=WAIT_MS
            )

            form.locator("button", has_text="Download").click()
            expect(form.locator(".progress-bar-success")).to_have_count(1)
            expect(form).to_contain_text("Saved")
            expect(form).to_contain_text(wanted["digest"])
            form.scroll_into_view_if_needed()
            form.screenshot(path=str(ARTIFACTS / "browser_picker_form.png"))

            _rerun_cell(page, 'print("image:   ", form.reference)')
            state = page.locator(
                ".jp-Cell", has_text='print("image:   ", form.reference)'
            )
            expect(state).to_contain_text(f"digest:   {wanted['digest']}")
            expect(state).to_contain_text("platform: linux/arm64")
            page.screenshot(path=str(ARTIFACTS / "browser_picker_page.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_failure.png"))
            raise
        finally:
            browser.close()

    archive = server.root / "images" / "demo_1_linux-arm64.tar"
    assert archive.is_file()
    loaded = podman_load(archive, loader_dir)
    assert loaded == [f"{registry.host}/browser/demo:1"]
    inspected = podman_inspect(loaded[0], loader_dir)
    assert inspected["Architecture"] == "arm64"
    assert inspected["Id"] == wanted["config_digest"].split(":")[1]


def _run_all_cells(page) -> None:
    """Run → Run All Cells, then wait until the last cell has run."""
    from playwright.sync_api import expect

    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle")
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
    last = page.locator(".jp-Notebook .jp-CodeCell").last
    expect(last.locator(".jp-InputPrompt")).to_contain_text("[", timeout=WAIT_MS)
    expect(last.locator(".jp-InputPrompt")).not_to_contain_text("*", timeout=WAIT_MS)
    expect(last.locator(".jp-InputPrompt")).not_to_have_text("[ ]:", timeout=WAIT_MS)


def _rerun_cell(page, text: str) -> None:
    cell = page.locator(".jp-Cell", has_text=text)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
