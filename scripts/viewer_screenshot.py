"""Prove that training shows live in nerfstudio's web viewer: a screenshot from a real, headless browser.

Starts ``ns-train mri-mednerf`` with the viewer bound to 127.0.0.1 on a free port (small settings, the
embedded MNI152 template unless ``--data`` is given), waits until the viewer answers and training has
run ``--min-steps`` steps, then drives headless Chromium over the Chrome DevTools Protocol: opens the
viewer, selects the ``volume`` output in the "Output type" dropdown, and takes screenshots until the
rendered brain is visible (a bright, textured blob in the centre of the 3D view, distinct from its
border) or ``--render-timeout`` runs out. With ``--slice-offset-mm MM`` it then selects the ``slice``
output (the field on a plane: coronal through the brain's centre by default), waits for a brain slice,
types MM into the "Slice offset (mm)" control and waits for a different brain slice; the two
screenshots are written beside ``--out`` (``*_slice.png``, ``*_slice_<MM>mm.png``). With ``--then-outputs``
it then selects each named output in turn in the same browser session and waits for a brain that
differs from the screenshot before (``*_<output>.png``). Training is stopped (its process group
terminated) either way.

The viewer's own camera starts outside the brain, framing it (``OrbitViewerCamera`` on the model), so
nothing is clicked in the 3D view. "Max res" is lowered to ``--max-res`` (256 px) because a 512 px
render takes minutes on a busy 2-core CPU; the screenshot is taken once a render of that size arrived.

The browser is kept offline: every host name but 127.0.0.1 resolves to nothing (the viewer's title bar
links a logo on nerf.studio, which therefore shows as its alt text).

Needs ``chromium`` on PATH (``scripts/install_system_deps.sh``). Exit status 0 when the brain is
visible, 1 otherwise (with the reason); the PNG path is printed whenever a screenshot was taken.

    python scripts/viewer_screenshot.py --out viewer.png
    python scripts/viewer_screenshot.py --out viewer.png --slice-offset-mm 25 --then-outputs slice_uncertainty
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from mri_nerfstudio.atomic_write import write_atomically

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STEP_ROW = re.compile(r"^\s*(\d+) \(\s*\d+(?:\.\d+)?%\)")
"""A row of ns-train's progress table: ``120 (40.00%)   1 s, 581.470 ms   ...``."""

# The input of a labelled viser GUI control, and the options of an open Mantine dropdown.
LABELLED_INPUT_JS = """(() => {
  const label = [...document.querySelectorAll("label")].find((l) => l.textContent.trim() === %s);
  const input = label && document.getElementById(label.htmlFor);
  if (!input) return null;
  input.scrollIntoView({block: "nearest"});  // back into view after a slider further down was set
  const r = input.getBoundingClientRect();
  return {value: input.value, x: r.x + r.width / 2, y: r.y + r.height / 2};
})()"""
# A viser slider: the label points at the slider; its number box is the visible input beside it.
SLIDER_NUMBER_INPUT_JS = """(() => {
  const label = [...document.querySelectorAll("label")].find((l) => l.textContent.trim() === %s);
  const slider = label && document.getElementById(label.htmlFor);
  const input = slider && [...slider.parentElement.querySelectorAll("input")].find((i) => i.type !== "hidden");
  if (!input) return null;
  input.scrollIntoView({block: "center"});  // custom elements sit below the fold of the control panel
  const r = input.getBoundingClientRect();
  return {value: input.value, x: r.x + r.width / 2, y: r.y + r.height / 2};
})()"""
DROPDOWN_OPTION_JS = """(() => {
  const option = [...document.querySelectorAll('[role="option"]')].find((o) => o.textContent.trim() === %s);
  if (!option) return null;
  const r = option.getBoundingClientRect();
  return {x: r.x + r.width / 2, y: r.y + r.height / 2};
})()"""
THREE_CANVAS_JS = """(() => {
  const canvas = document.querySelector('canvas[data-engine^="three.js"]');
  if (!canvas) return null;
  const r = canvas.getBoundingClientRect();
  return [Math.round(r.left), Math.round(r.top), Math.round(r.right), Math.round(r.bottom)];
})()"""
RENDER_RESOLUTION = re.compile(r"Resolution: (\d+)x(\d+)px")
VIEWER_STEP = re.compile(r"Step: (\d+)")
"""The viewer's stats lines: the size of the last image rendered for this client, the training step shown."""
START = time.monotonic()


def log(message: str, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    print(f"[viewer-screenshot {time.monotonic() - START:6.1f} s] {message}", file=stream, flush=True)


class ScreenshotError(RuntimeError):
    """The viewer could not be reached, driven or captured (the message says which step failed)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_answers(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 1.0) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); raise after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    raise ScreenshotError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def last_training_step(log_text: str) -> int | None:
    """The latest step in ns-train's progress table (None before the first row)."""
    lines = re.split(r"[\r\n]", ANSI_ESCAPE.sub("", log_text))
    steps = [int(match.group(1)) for line in lines if (match := STEP_ROW.match(line))]
    return steps[-1] if steps else None


def ns_train_executable() -> str:
    """``ns-train`` next to this Python (the project's virtualenv), else the one on PATH."""
    beside = Path(sys.executable).parent / "ns-train"
    found = str(beside) if beside.exists() else shutil.which("ns-train")
    if found is None:
        raise ScreenshotError("ns-train not found next to this Python nor on PATH: install the project first")
    return found


def training_command(args: argparse.Namespace, port: int, output_dir: Path) -> list[str]:
    """``ns-train mri-mednerf`` with the viewer on 127.0.0.1:``port`` and the small settings of ``args``."""
    command = [
        ns_train_executable(), "mri-mednerf",
        "--vis", "viewer",
        "--viewer.websocket-host", "127.0.0.1",
        "--viewer.websocket-port", str(port),
        "--max-num-iterations", str(args.iterations),
        "--output-dir", str(output_dir),
        "mri-data",
        "--data", args.data,
        "--prepare.image-size", str(args.image_size),
    ]  # fmt: skip
    if args.cache_dir is not None:
        command += ["--cache-dir", str(args.cache_dir)]
    return command


def stop_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM to the group ``process`` leads (it was started in its own session), SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class DevToolsPage:
    """A Chrome DevTools Protocol session on one page: synchronous calls, events ignored (none enabled)."""

    def __init__(self, connection: ClientConnection, call_timeout_s: float = 60.0):
        self._connection = connection
        self._call_timeout_s = call_timeout_s
        self._last_id = 0

    def call(self, method: str, **params: Any) -> dict:
        """Send one command and return its ``result``."""
        self._last_id += 1
        self._connection.send(json.dumps({"id": self._last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._connection.recv(timeout=self._call_timeout_s))
            if message.get("id") != self._last_id:
                continue
            if "error" in message:
                raise ScreenshotError(f"DevTools {method} failed: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            reason = details.get("exception", {}).get("description") or details.get("text")
            raise ScreenshotError(f"JavaScript failed in the page: {reason} (in {expression.strip()[:80]!r})")
        return result["result"].get("value")

    def click(self, x: float, y: float) -> None:
        """A left click at CSS pixel (x, y), as real mouse events (Mantine's dropdowns ignore element.click())."""
        for event_type in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=event_type, x=x, y=y, button="left", clickCount=1)

    def hover(self, x: float, y: float) -> None:
        """Move the mouse to CSS pixel (x, y) without pressing a button."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def set_viewport(self, width: int, height: int) -> None:
        """Lay the page out at exactly width x height CSS pixels, one device pixel each."""
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self) -> np.ndarray:
        """The page as it is now: [H, W, 3] uint8 RGB, one pixel per CSS pixel."""
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def launch_chromium(profile_dir: Path, window: tuple[int, int]) -> tuple[subprocess.Popen, str]:
    """Start headless Chromium (software WebGL, offline); return it and the DevTools URL of its first page."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise ScreenshotError("chromium not installed: run scripts/install_system_deps.sh")
    command = [
        chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader",  # WebGL on the CPU
        f"--window-size={window[0]},{window[1]}", "--hide-scrollbars",
        "--remote-debugging-port=0", f"--user-data-dir={profile_dir}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # nothing leaves the machine
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "about:blank",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # With port 0 Chromium picks a free port and writes it as the first line of this file.
    port_file = profile_dir / "DevToolsActivePort"
    wait_until(lambda: port_file.exists() and port_file.read_text().count("\n") >= 1, 60, "Chromium's DevTools port")
    devtools_port = int(port_file.read_text().splitlines()[0])

    def page_target() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list", timeout=5) as response:
            pages = [t for t in json.load(response) if t.get("type") == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None

    return process, wait_until(page_target, 30, "Chromium's first page")


def select_output(page: DevToolsPage, output: str, timeout_s: float) -> None:
    """Pick ``output`` in the viewer's "Output type" dropdown (filled after the first render)."""
    label = json.dumps("Output type")
    wait_until(
        lambda: (state := page.evaluate(LABELLED_INPUT_JS % label)) and state["value"] not in ("", "not set"),
        timeout_s,
        "the viewer's first render (Output type still 'not set')",
    )
    state = page.evaluate(LABELLED_INPUT_JS % label)
    page.click(state["x"], state["y"])
    option = wait_until(lambda: page.evaluate(DROPDOWN_OPTION_JS % json.dumps(output)), 10, f"output option {output!r}")
    page.click(option["x"], option["y"])
    wait_until(
        lambda: page.evaluate(LABELLED_INPUT_JS % label)["value"] == output, 10, f"Output type to show {output!r}"
    )


def set_slider(page: DevToolsPage, label: str, value: int) -> None:
    """Type ``value`` into the number box of the viewer's slider ``label`` (one input event, no partial values)."""
    expression = SLIDER_NUMBER_INPUT_JS % json.dumps(label)
    box = wait_until(lambda: page.evaluate(expression), 10, f"the {label!r} slider")
    page.click(box["x"], box["y"])
    page.evaluate("document.activeElement.select()")  # typing then replaces the old value
    page.call("Input.insertText", text=str(value))
    wait_until(lambda: page.evaluate(expression)["value"] == str(value), 10, f"{label!r} to read {value}")
    page.evaluate("document.activeElement.blur()")


@dataclass(frozen=True)
class BrainVisibility:
    """Grey levels in [0, 1] of the 3D view's centre (the brain's place) against its border (background)."""

    centre_mean: float
    border_mean: float
    centre_std: float
    bright_fraction: float
    """Fraction of centre pixels brighter than the border's median + 0.05."""

    def visible(self, min_contrast: float = 0.1, min_bright_fraction: float = 0.5, min_std: float = 0.03) -> bool:
        """A bright blob (contrast and coverage) with texture (std), not a flat grey or black view."""
        return (
            self.centre_mean - self.border_mean >= min_contrast
            and self.bright_fraction >= min_bright_fraction
            and self.centre_std >= min_std
        )

    def describe(self) -> str:
        return (
            f"centre mean {self.centre_mean:.3f} vs border mean {self.border_mean:.3f}, "
            f"{100 * self.bright_fraction:.0f}% of the centre brighter than the background, "
            f"centre std {self.centre_std:.3f}"
        )


def measure_brain_visibility(screenshot: np.ndarray, view_box: tuple[int, int, int, int]) -> BrainVisibility:
    """Compare the centre of the 3D view with its border.

    Args:
        screenshot: [H, W, 3] uint8 RGB.
        view_box: (left, top, right, bottom) pixels of the viewer's 3D canvas in ``screenshot``.

    The centre is the middle 30% of the view in each direction (inside the brain, which the initial
    viewer camera frames to most of the view's height); the border is the outer 5% frame.
    """
    left, top, right, bottom = view_box
    grey = screenshot[top:bottom, left:right].astype(np.float32).mean(axis=-1) / 255.0
    height, width = grey.shape
    centre = grey[int(0.35 * height) : int(0.65 * height), int(0.35 * width) : int(0.65 * width)]
    frame_h, frame_w = max(1, int(0.05 * height)), max(1, int(0.05 * width))
    border = np.concatenate(
        [grey[:frame_h].ravel(), grey[-frame_h:].ravel(), grey[:, :frame_w].ravel(), grey[:, -frame_w:].ravel()]
    )
    threshold = float(np.median(border)) + 0.05  # the median ignores the axes gizmo in a corner
    return BrainVisibility(
        centre_mean=float(centre.mean()),
        border_mean=float(border.mean()),
        centre_std=float(centre.std()),
        bright_fraction=float((centre > threshold).mean()),
    )


def save_png(image: np.ndarray, path: Path) -> None:
    """Write [H, W, 3] uint8 as PNG atomically (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))


def page_text(page: DevToolsPage) -> str:
    return page.evaluate("document.body ? document.body.innerText : ''") or ""


def render_resolution(page: DevToolsPage) -> tuple[int, int]:
    """(width, height) in pixels of the last image the viewer rendered, (0, 0) before the first."""
    match = RENDER_RESOLUTION.search(page_text(page))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def viewer_step(page: DevToolsPage) -> int | None:
    """The training step the viewer shows (updated with its renders during training)."""
    match = VIEWER_STEP.search(page_text(page))
    return int(match.group(1)) if match else None


def capture_brain(page: DevToolsPage, url: str, args: argparse.Namespace) -> tuple[np.ndarray, BrainVisibility]:
    """Open the viewer, select the output, and screenshot until the brain is visible or time runs out."""
    page.set_viewport(*args.window)
    page.call("Page.navigate", url=url)
    wait_until(lambda: "Connected" in page_text(page), 60, "the viewer page to connect to its server")
    select_output(page, args.output, args.render_timeout)
    set_slider(page, "Max res", args.max_res)
    return capture_when(page, args, lambda screenshot, visibility: visibility.visible())


def capture_when(
    page: DevToolsPage, args: argparse.Namespace, done: Callable[[np.ndarray, BrainVisibility], bool]
) -> tuple[np.ndarray, BrainVisibility]:
    """Screenshot until a full-size render satisfies ``done(screenshot, visibility)`` or time runs out.

    The viewer first streams small, fast renders, then one at its "Max res" once the camera is still:
    a screenshot counts only when the last render is at full size (``--max-res`` on its longer side).
    """
    view_box = wait_until(lambda: page.evaluate(THREE_CANVAS_JS), 10, "the viewer's 3D canvas")
    page.hover(args.window[0] / 2, 1)  # over the title bar: no tooltip in the picture, the camera stays put
    deadline = time.monotonic() + args.render_timeout
    while True:
        sharp = max(render_resolution(page)) >= args.max_res
        screenshot = page.screenshot()
        visibility = measure_brain_visibility(screenshot, tuple(view_box))
        if (sharp and done(screenshot, visibility)) or time.monotonic() > deadline:
            return screenshot, visibility
        time.sleep(2.0)


def view_change(before: np.ndarray, after: np.ndarray, view_box: tuple[int, int, int, int]) -> float:
    """Mean absolute grey-level change (0..1) inside the 3D view between two screenshots."""
    left, top, right, bottom = view_box
    crop = [image[top:bottom, left:right].astype(np.float32).mean(axis=-1) / 255.0 for image in (before, after)]
    return float(np.abs(crop[1] - crop[0]).mean())


def capture_new_brain(
    page: DevToolsPage, args: argparse.Namespace, before: np.ndarray, failure: str
) -> tuple[np.ndarray, BrainVisibility, float]:
    """Screenshot until a brain shows that differs from ``before`` (grey-level change > 0.01 in the 3D view);
    returns it, its visibility and the change, or raises :class:`ScreenshotError` starting with ``failure``."""
    view_box = tuple(page.evaluate(THREE_CANVAS_JS))
    screenshot, visibility = capture_when(
        page, args, lambda image, seen: seen.visible() and view_change(before, image, view_box) > 0.01
    )
    change = view_change(before, screenshot, view_box)
    if not (visibility.visible() and change > 0.01):
        raise ScreenshotError(f"{failure}: {visibility.describe()}, changed by {change:.3f}")
    return screenshot, visibility, change


def check_output(
    page: DevToolsPage, args: argparse.Namespace, output: str, before: np.ndarray
) -> tuple[np.ndarray, BrainVisibility]:
    """Pick ``output`` and wait for a brain that differs from ``before`` (the screenshot of the output shown until
    then); raises :class:`ScreenshotError` when none comes."""
    select_output(page, output, args.render_timeout)
    screenshot, visibility, _ = capture_new_brain(page, args, before, f"no new brain in the {output!r} output")
    return screenshot, visibility


def check_slice(
    page: DevToolsPage, args: argparse.Namespace, before: np.ndarray
) -> list[tuple[str, np.ndarray, str]]:
    """Pick the ``slice`` output, then move the plane by ``--slice-offset-mm``: both must show a brain slice,
    each different from the screenshot before it (``before``: the other output's). Returns (name, screenshot,
    description) for each."""
    first, visibility = check_output(page, args, "slice", before)
    set_slider(page, "Slice offset (mm)", args.slice_offset_mm)
    failure = f"no new brain slice after moving the plane to {args.slice_offset_mm} mm"
    moved, moved_visibility, change = capture_new_brain(page, args, first, failure)
    return [
        ("slice", first, visibility.describe()),
        (f"slice_{args.slice_offset_mm}mm", moved, f"{moved_visibility.describe()}, changed by {change:.3f}"),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("viewer_screenshot.png"), help="PNG to write")
    parser.add_argument("--data", default="default", help="mri-data --data (default: the embedded MNI152 template)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="mri-data --cache-dir (default: its own)")
    parser.add_argument("--image-size", type=int, default=64, help="training view size, pixels")
    parser.add_argument("--iterations", type=int, default=400, help="ns-train --max-num-iterations")
    parser.add_argument("--min-steps", type=int, default=100, help="training steps before the browser opens")
    parser.add_argument("--output", default="volume", help="viewer output type to select")
    parser.add_argument(
        "--slice-offset-mm",
        type=int,
        default=None,
        help="then pick the 'slice' output, move its plane to this offset and check both show a brain slice",
    )
    parser.add_argument(
        "--then-outputs",
        nargs="+",
        default=(),
        metavar="OUTPUT",
        help="then pick each of these outputs in turn, in the same session, and check each shows a brain",
    )
    parser.add_argument("--max-res", type=int, default=256, help="the viewer's Max res (512 is slow on CPU)")
    parser.add_argument("--window", type=int, nargs=2, default=(1280, 800), metavar=("W", "H"))
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds for data preparation + steps")
    parser.add_argument("--render-timeout", type=float, default=180, help="seconds for the viewer to render")
    parser.add_argument("--keep-run", type=Path, default=None, help="keep ns-train's outputs and log here")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, run_dir: Path) -> int:
    port = free_port()
    log_path = run_dir / "ns-train.log"
    command = training_command(args, port, run_dir / "outputs")
    log(" ".join(command))
    with log_path.open("w") as training_log:
        training = subprocess.Popen(command, stdout=training_log, stderr=subprocess.STDOUT, start_new_session=True)
    browser = None
    try:

        def trained_enough() -> bool:
            if training.poll() is not None:
                tail = log_path.read_text()[-2000:]
                raise ScreenshotError(f"ns-train exited with status {training.returncode}:\n{tail}")
            step = last_training_step(log_path.read_text())
            return port_answers(port) and step is not None and step >= args.min_steps

        wait_until(trained_enough, args.start_timeout, f"the viewer on port {port} and {args.min_steps} steps")
        log(f"viewer at http://127.0.0.1:{port}, training at step {last_training_step(log_path.read_text())}")
        browser, page_url = launch_chromium(run_dir / "chromium-profile", tuple(args.window))
        with connect(page_url, max_size=None) as connection:
            page = DevToolsPage(connection)
            screenshot, visibility = capture_brain(page, f"http://127.0.0.1:{port}", args)
            width, height = render_resolution(page)
            step = viewer_step(page)
            save_png(screenshot, args.out)
            log(f"{args.out.resolve()}")
            log(f"{args.output!r} rendered at {width}x{height} px, viewer at step {step}: {visibility.describe()}")
            if not visibility.visible():
                log("FAILED: no brain visible in the centre of the viewer", error=True)
                return 1
            log(f"OK: the rendered brain ({args.output!r} output) is visible")
            if args.slice_offset_mm is not None:
                for name, image, description in check_slice(page, args, screenshot):
                    path = args.out.with_name(f"{args.out.stem}_{name}.png")
                    save_png(image, path)
                    log(f"{path.resolve()}: {description}")
                    screenshot = image
                log(f"OK: the 'slice' output shows a brain slice and follows the plane to {args.slice_offset_mm} mm")
            for output in args.then_outputs:
                screenshot, visibility = check_output(page, args, output, screenshot)
                path = args.out.with_name(f"{args.out.stem}_{output}.png")
                save_png(screenshot, path)
                log(f"{path.resolve()}: {visibility.describe()}")
                log(f"OK: the rendered brain ({output!r} output) is visible")
        return 0
    finally:
        if browser is not None:
            stop_process_group(browser, grace_s=5.0)
        stop_process_group(training)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A plain SIGTERM (CI cancelling the job) would skip the finally blocks that stop ns-train and Chromium.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        if args.keep_run is not None:
            args.keep_run.mkdir(parents=True, exist_ok=True)
            return run(args, args.keep_run)
        with tempfile.TemporaryDirectory(prefix="viewer-screenshot-") as run_dir:
            return run(args, Path(run_dir))
    except ScreenshotError as error:
        log(f"FAILED: {error}", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
