"""JupyterLab in headless Chromium for browser tests: a private Jupyter server (from this
venv, on a free loopback port, its own settings/workspace dirs, the kernel pointed at the
test Redis) and a selenium driver on Debian's ``/usr/bin/chromium`` + ``chromedriver``.

``Lab.run_cell(i)`` executes a notebook cell through JupyterLab's own command (the app is
exposed with ``--LabApp.expose_app_in_browser``), as a user pressing Shift+Enter would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from redisproc import free_port

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when the system has no chromium."""
    browser = next((p for p in CHROMIUM if os.path.exists(p)), None) or shutil.which("chromium")
    driver = next((p for p in DRIVERS if os.path.exists(p)), None) or shutil.which(
        "chromedriver")
    if browser and driver:
        return browser, driver
    return None


def wait(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
         interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:  # the page is still changing
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" ({last_exc})" if last_exc else ""))


class Lab:
    """A JupyterLab server serving ``root`` and a Chromium window on it (1366x768)."""

    def __init__(self, root: Path, env: dict[str, str], shots: Path) -> None:
        self.root = root
        self.env = env
        self.shots = shots
        self.port = free_port()
        self.token = "nbqueue-browser-test"
        self.proc: subprocess.Popen[bytes] | None = None
        self.driver: Any = None
        self.log = root / "jupyter.log"

    # -- server ------------------------------------------------------------------------------
    def start(self, browser: str, chromedriver: str) -> None:
        settings = self.root / ".lab-settings"
        (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
        # No news prompt over the notebook.
        (settings / "@jupyterlab" / "apputils-extension" /
         "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
        env = {**os.environ, **self.env, "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(self.root / ".lab-workspaces"),
               "JUPYTER_RUNTIME_DIR": str(self.root / ".runtime")}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
               "--ip=127.0.0.1", f"--ServerApp.token={self.token}",
               "--ServerApp.password=", f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True",
               "--LabServerApp.open_browser=False"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 120
        while not self._server_up():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {self.log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "the Jupyter server did not start in 120 s"
            time.sleep(0.3)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = browser
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=1366,768", "--force-device-scale-factor=1",
                    "--hide-scrollbars"):
            opts.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
        # The viewport itself is 1366x768 (a window of that size has less room inside).
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False})

    def _server_up(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.quit()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- page --------------------------------------------------------------------------------
    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def js_async(self, body: str, *args: Any) -> Any:
        """Run an async JS body (``await`` allowed); returns its value."""
        return self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"(async () => {{ {body} }})().then(done, e => done('JSERROR ' + e));", *args)

    def open_notebook(self, name: str) -> None:
        self.driver.get(f"http://127.0.0.1:{self.port}/lab/tree/{name}?token={self.token}")
        wait(lambda: self.js("return !!(window.jupyterapp && window.jupyterapp.shell"
                             " && window.jupyterapp.shell.currentWidget"
                             " && window.jupyterapp.shell.currentWidget.content"
                             " && window.jupyterapp.shell.currentWidget.content.widgets);"),
             120, "the notebook to open")
        wait(lambda: self.kernel_status() == "idle", 120, "an idle kernel")

    def kernel_status(self) -> str:
        return str(self.js("const w = window.jupyterapp.shell.currentWidget;"
                           "const k = w && w.sessionContext && w.sessionContext.session"
                           " && w.sessionContext.session.kernel;"
                           "return k ? k.status : 'none';"))

    def show_file_browser(self) -> None:
        self.js("window.jupyterapp.shell.activateById('filebrowser');")
        wait(lambda: self.js("return !window.jupyterapp.shell.leftCollapsed;"), 20,
             "the file browser to open")

    def run_cell(self, index: int) -> None:
        """Execute cell ``index`` (0-based) as Shift+Enter would; returns once started."""
        r = self.js_async(
            "const nb = window.jupyterapp.shell.currentWidget;"
            f"nb.content.activeCellIndex = {index};"
            "nb.content.deselectAll();"
            "window.jupyterapp.commands.execute('notebook:run-cell');"
            "return 'ok';")
        assert r == "ok", r

    def cell_running(self, index: int) -> bool:
        return bool(self.js(
            "const c = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];"
            "return c.model.executionCount === null && c.node.querySelector("
            "'.jp-InputArea-prompt').textContent.includes('*');", index))

    def wait_cell_done(self, index: int, timeout: float = 120) -> None:
        wait(lambda: not self.cell_running(index)
             and self.js("const c = window.jupyterapp.shell.currentWidget.content"
                         ".widgets[arguments[0]]; return c.model.executionCount !== null;",
                         index), timeout, f"cell {index} to finish")

    def cell_text(self, index: int) -> str:
        return str(self.js(
            "const c = window.jupyterapp.shell.currentWidget.content.widgets[arguments[0]];"
            "const o = c.node.querySelector('.jp-OutputArea'); return o ? o.innerText : '';",
            index))

    def save(self) -> None:
        r = self.js_async("await window.jupyterapp.commands.execute('docmanager:save');"
                          "return 'ok';")
        assert r == "ok", r

    def screenshot(self, name: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@contextlib.contextmanager
def lab(root: Path, env: dict[str, str], shots: Path) -> Iterator[Lab]:
    found = find_browser()
    assert found is not None
    session = Lab(root, env, shots)
    try:
        session.start(*found)
        yield session
    except BaseException:
        if session.driver is not None:  # what the page looked like, for the reader
            with contextlib.suppress(Exception):
                print(f"failure screenshot: {session.screenshot('zz-failure')}")
                for entry in session.driver.get_log("browser")[-30:]:
                    print("console:", entry.get("level"), entry.get("message", "")[:300])
        raise
    finally:
        session.stop()


def notebook(cells: list[str]) -> dict[str, Any]:
    """A minimal nbformat 4 notebook of code cells."""
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": f"cell-{i}",
                       "metadata": {}, "outputs": [], "source": src}
                      for i, src in enumerate(cells)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}
