"""A form to choose an image and download it, for notebooks: :func:`picker`.

The form asks the registry as you go: the repository's tags, then the chosen
tag's platforms, then that image's layers as a preview. The Download button
runs :func:`dgetkit.pull` with progress bars inside the form, then shows the
archive's path and the image digest. Errors show as a message in the form.

Every button and dropdown calls a plain method (:meth:`Picker.load`,
:meth:`Picker.choose_tag`, :meth:`Picker.choose_platform`,
:meth:`Picker.download`), so the form can be driven from code too, and its
state (:attr:`Picker.reference`, :attr:`Picker.platform`,
:attr:`Picker.result`) read afterwards.
"""

from __future__ import annotations

import html
import re
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as w

from . import frames
from .archive import default_name
from .errors import DgetkitError
from .platform import Platform, choose
from .pull import PullResult, pull
from .reference import Reference

#: Characters of a ``created_by`` command shown in the layers preview.
COMMAND_WIDTH = 90
_FORM_WIDTH = "720px"
_STYLE = {"description_width": "90px"}


class Picker:
    """The download form and its state; made by :func:`picker`.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The form; a cell whose last line is the picker shows it.
    reference : str or None
        The chosen image, ``registry/repository:tag``.
    platform : str or None
        The chosen platform, ``os/arch[/variant]``.
    result : PullResult or None
        What the last download wrote.
    error : str or None
        The message of the last error shown in the form.
    layers : pandas.DataFrame or None
        The layers of the chosen image (what the preview shows).
    """

    def __init__(self, repository: str = "", *, output_dir=".", options=None):
        self.options = options
        self.output_dir = Path(output_dir)
        self.progress = True
        self.repository: Reference | None = None
        self.reference: str | None = None
        self.platform: str | None = None
        self.result: PullResult | None = None
        self.error: str | None = None
        self.layers = None
        self._wanted_tag: str | None = None
        self._filling = False
        self._build(repository)

    # -- the widgets ---------------------------------------------------------------

    def _build(self, repository: str) -> None:
        self._make_inputs(repository)
        self.download_button = w.Button(
            description="Download", icon="download", button_style="primary"
        )
        self.progress_output = w.Output()
        self.status_html = w.HTML()
        self._connect()
        self.widget = w.VBox(
            [
                w.HTML("<b>Download a container image</b>"),
                w.HBox([self.repository_text, self.list_button]),
                self.tag_dropdown,
                self.platform_dropdown,
                self.layers_html,
                w.HBox([self.path_text, self.overwrite_checkbox]),
                self.download_button,
                self.progress_output,
                self.status_html,
            ],
            layout=w.Layout(width=_FORM_WIDTH),
        )
        self._enable_download(False)

    def _make_inputs(self, repository: str) -> None:
        self.repository_text = w.Text(
            value=repository,
            description="Repository",
            placeholder="alpine, or registry.example.com/team/app",
            continuous_update=False,
            style=_STYLE,
            layout=w.Layout(width="560px"),
        )
        self.list_button = w.Button(description="List tags", icon="search")
        self.tag_dropdown = w.Dropdown(description="Tag", style=_STYLE)
        self.platform_dropdown = w.Dropdown(description="Platform", style=_STYLE)
        self.layers_html = w.HTML()
        self.path_text = w.Text(
            description="Save as", style=_STYLE, layout=w.Layout(width="560px")
        )
        self.overwrite_checkbox = w.Checkbox(
            description="replace an existing file", indent=False
        )

    def _connect(self) -> None:
        self.list_button.on_click(lambda _: self.load(self.repository_text.value))
        self.download_button.on_click(lambda _: self.download())
        self.repository_text.observe(self._on_repository, "value")
        self.tag_dropdown.observe(self._on_tag, "value")
        self.platform_dropdown.observe(self._on_platform, "value")

    def _on_repository(self, change) -> None:
        if not self._filling and change["new"].strip():
            self.load(change["new"])

    def _on_tag(self, change) -> None:
        if not self._filling and change["new"]:
            self.choose_tag(change["new"])

    def _on_platform(self, change) -> None:
        if not self._filling and change["new"]:
            self.choose_platform(change["new"])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # -- steps the widgets call ----------------------------------------------------

    def load(self, repository: str | None = None) -> list[str] | None:
        """List the repository's tags and choose one (the typed tag, or latest).

        Returns the tags, or None after an error (shown in the form).
        """
        text = repository if repository is not None else self.repository_text.value
        with self._step("listing the tags of", text.strip()):
            self._clear(tags=True)
            self.repository, self._wanted_tag = _parse_repository(text)
            found = frames.tags(self.repository, options=self.options)
            names = sorted(found["tag"], key=_natural_key)
            if not names:
                self._fail(f"{self.repository.name} has no tags")
                return []
            with self._quiet():
                self.repository_text.value = text.strip()
                self.tag_dropdown.options = names
                self.tag_dropdown.value = self._default_tag(names)
            self.choose_tag(self.tag_dropdown.value)
            return names
        return None

    def choose_tag(self, tag: str) -> list[str] | None:
        """List the tag's platforms (attestations left out) and choose one."""
        if self.repository is None:
            return self._fail("type a repository first")
        reference = Reference(self.repository.registry, self.repository.repository, tag)
        with self._step("reading the platforms of", str(reference)):
            self._clear(tags=False)
            table = frames.platforms(reference, options=self.options)
            names = table.loc[~table["attestation"], "platform"].tolist()
            with self._quiet():
                if self.tag_dropdown.value != tag:
                    self.tag_dropdown.value = tag
                self.platform_dropdown.options = names
                self.platform_dropdown.value = _default_platform(names)
            self.reference = str(reference)
            self.choose_platform(self.platform_dropdown.value)
            return names
        return None

    def choose_platform(self, platform: str):
        """Show the layers of the chosen tag's image for ``platform``."""
        if self.reference is None:
            return self._fail("choose a tag first")
        with self._step("reading the layers of", f"{self.reference} {platform}"):
            self.layers = frames.layers(
                self.reference, platform=platform or None, options=self.options
            )
            with self._quiet():
                if platform and self.platform_dropdown.value != platform:
                    self.platform_dropdown.value = platform
            self.platform = platform or None
            self.layers_html.value = _layers_table(self.layers)
            self.path_text.value = str(self.output_dir / self._file_name())
            self._show("")
            self._enable_download(True)
            return self.layers
        return None

    def download(self, path=None) -> PullResult | None:
        """Pull the chosen image into an archive, with progress in the form."""
        if self.reference is None:
            return self._fail("choose an image first")
        target = Path(path or self.path_text.value or self._file_name())
        if target.exists() and not self.overwrite_checkbox.value:
            return self._fail(
                f"{target} already exists: type another name, or tick "
                "'replace an existing file'"
            )
        self.download_button.disabled = True
        self._show(f"Downloading {html.escape(self.reference)}…")
        try:
            with self._step("downloading", self.reference):
                self.result = self._pull(target)
                self._show_result(self.result)
                return self.result
        finally:
            self.download_button.disabled = False
        return None

    def _pull(self, target: Path) -> PullResult:
        if target.parent == self.output_dir:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if _in_kernel():
            self.progress_output.clear_output()
        with self.progress_output:
            return pull(
                self.reference,
                target,
                platform=self.platform,
                progress=self.progress,
                overwrite=self.overwrite_checkbox.value,
                options=self.options,
            )

    # -- helpers -------------------------------------------------------------------

    @contextmanager
    def _step(self, doing: str, what: str):
        """Turn any error of a step into a message in the form."""
        self.error = None
        try:
            yield
        except Exception as err:  # noqa: BLE001 - a form shows failures, not tracebacks
            self._fail(_explain(err, doing, what))

    @contextmanager
    def _quiet(self):
        """Change widget values without triggering their callbacks."""
        self._filling = True
        try:
            yield
        finally:
            self._filling = False

    def _clear(self, *, tags: bool) -> None:
        with self._quiet():
            if tags:
                self.tag_dropdown.options = []
                self.repository = None
            self.platform_dropdown.options = []
        self.reference = self.platform = self.layers = None
        self.layers_html.value = ""
        self._enable_download(False)

    def _fail(self, message: str) -> None:
        self.error = message
        self.status_html.value = (
            "<div class='dgetkit-error' style='color:#b00020'>"
            f"<b>Could not continue:</b> {html.escape(message)}</div>"
        )

    def _show(self, message_html: str) -> None:
        self.status_html.value = message_html

    def _show_result(self, result: PullResult) -> None:
        path = html.escape(str(result.path))
        self._show(
            "<div class='dgetkit-done' style='color:#1b5e20'>"
            f"<b>Saved</b> <code>{path}</code> ({frames.human_size(result.bytes)})"
            f"<br>image digest <code>{html.escape(result.digest)}</code>"
            f"<br>load it with <code>docker load -i {path}</code></div>"
        )

    def _enable_download(self, enabled: bool) -> None:
        self.download_button.disabled = not enabled

    def _default_tag(self, names: list[str]) -> str:
        if self._wanted_tag in names:
            return self._wanted_tag
        return "latest" if "latest" in names else names[-1]

    def _file_name(self) -> str:
        name = default_name(Reference.parse(self.reference))
        if not self.platform:
            return name
        stem = name.removesuffix(".tar")
        return f"{stem}_{self.platform.replace('/', '-')}.tar"


def _in_kernel() -> bool:
    """True inside Jupyter; outside it an Output widget would print escapes."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _parse_repository(text: str) -> tuple[Reference, str | None]:
    """The repository typed, and the tag typed with it (if any)."""
    reference = Reference.parse(text)
    last = text.strip().split("@")[0].rsplit("/", 1)[-1]
    return reference, (reference.tag if ":" in last else None)


def _natural_key(tag: str) -> list:
    """Sort ``3.9`` before ``3.10``: digit runs compare as numbers."""
    return [
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", tag)
    ]


def _default_platform(names: list[str]) -> str | None:
    if not names:
        return None
    parsed = [Platform.parse(n) if n else None for n in names]
    chosen = choose(Platform.host(), parsed)
    return names[chosen if chosen is not None else 0]


def _layers_table(layers) -> str:
    """The preview: a small HTML table of sizes and the commands that made them."""
    created = layers["created"].dt.strftime("%Y-%m-%d").fillna("")
    rows = [
        _row("th", "layer", "size", "created", "made by")
        + "".join(
            _row("td", str(row.layer), row.size_human, day, _shorten(row.created_by))
            for row, day in zip(layers.itertuples(), created)
        )
    ]
    total = frames.human_size(int(layers["size"].sum()))
    return (
        f"<table class='dgetkit-layers'>{''.join(rows)}</table>"
        f"<div>{len(layers)} layers, {total} to download</div>"
    )


def _row(tag: str, *cells: str) -> str:
    """One table row; numbers right-aligned, text left, with room between."""
    styled = []
    for number, cell in enumerate(cells):
        align = "right" if number < 2 else "left"
        style = f"text-align:{align};padding:1px 14px 1px 0"
        styled.append(f"<{tag} style='{style}'>{html.escape(cell)}</{tag}>")
    return f"<tr>{''.join(styled)}</tr>"


def _shorten(command) -> str:
    if not isinstance(command, str):  # None or NaN: no history step for it
        return ""
    command = " ".join(str(command).split())
    if len(command) <= COMMAND_WIDTH:
        return command
    return command[: COMMAND_WIDTH - 1] + "…"


def _explain(err: Exception, doing: str, what: str) -> str:
    if isinstance(err, DgetkitError):
        return f"{doing} {what}: {err}"
    return f"{doing} {what} failed unexpectedly ({type(err).__name__}: {err})"


def picker(repository: str = "", *, output_dir=".", options=None, **settings) -> Picker:
    """A form to choose a tag and platform of an image, preview it, and download it.

    Parameters
    ----------
    repository : str
        Filled in and looked up at once, e.g. ``"alpine"`` or
        ``"alpine:3.20"`` (the tag is then preselected).
    output_dir : path
        Where archives go unless another path is typed into the form.
    options, **settings
        Connection settings (``username=``, ``password=``, ``insecure=``,
        ``ca_cert=``, ``mirrors=``), see :func:`dgetkit.frames.connection`.

    Returns
    -------
    Picker
        Shows as the form; read ``.reference``, ``.platform`` and
        ``.result`` afterwards.

    Examples
    --------
    >>> form = picker("alpine:3.20", output_dir="images")    # doctest: +SKIP
    >>> form                                                 # doctest: +SKIP
    >>> form.result.path                                     # doctest: +SKIP
    """
    form = Picker(
        repository,
        output_dir=output_dir,
        options=frames.connection(options, **settings),
    )
    if repository.strip():
        form.load(repository)
    return form
