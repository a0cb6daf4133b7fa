"""Every notebook in ``notebooks/`` runs top to bottom against a local registry.

The parameter cell (tagged ``parameters``) is rewritten with the local
registry's values before the notebook runs in a real Jupyter kernel
(nbclient). Executed copies are kept in ``tests/artifacts/`` to read.
"""

from __future__ import annotations

import ast
import json
import tarfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.support.demo import push_demo
from tests.support.images import Pusher
from tests.support.loaders import podman_load, skopeo_inspect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CELL_TIMEOUT = 120
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def set_parameters(notebook, **values) -> None:
    """Replace ``NAME = ...`` assignments of the ``parameters`` cell.

    Every name must be assigned in that cell exactly once, so a renamed
    parameter fails here instead of being silently ignored.
    """
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    lines = cells[0].source.splitlines()
    spans = {
        node.targets[0].id: (node.lineno, node.end_lineno)
        for node in ast.parse(cells[0].source).body
        if isinstance(node, ast.Assign)
    }
    for name in sorted(values, key=lambda n: -spans.get(n, (0,))[0]):
        assert name in spans, f"the parameters cell does not set {name}"
        start, end = spans[name]
        lines[start - 1 : end] = [f"{name} = {values[name]!r}"]
    cells[0].source = "\n".join(lines)


def run_notebook(name: str, folder: Path, label: str = "", **values):
    """Execute ``notebooks/name`` in ``folder`` with the given parameters."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    set_parameters(notebook, **values)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        stem = name.removesuffix(".ipynb") + (f"-{label}" if label else "")
        nbformat.write(notebook, ARTIFACTS / f"{stem}.executed.ipynb")
    return notebook


def outputs(notebook) -> str:
    """Every text, HTML and stream output of the notebook, joined."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [str(data.get(kind, "")) for kind in ("text/plain", "text/html")]
    return "\n".join(texts)


def mime_types(notebook) -> set[str]:
    return {
        kind
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        for kind in output.get("data", {})
    }


@pytest.fixture(autouse=True)
def quiet_environment(tmp_path, monkeypatch):
    """The kernel inherits a private cache and no Docker credentials."""
    monkeypatch.setenv("DGETKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("DGETKIT_USERNAME", raising=False)
    monkeypatch.delenv("DGETKIT_PASSWORD", raising=False)


@pytest.fixture(scope="module")
def demo(registry, images):
    """The demo index (amd64 and arm64, with attestations) on the registry."""
    records, index = push_demo(Pusher(registry.url))
    return {"records": records, "index": index}


def test_every_notebook_has_one_parameters_cell_and_no_outputs():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == [
        "01_explore_an_image.ipynb",
        "02_pick_and_download.ipynb",
        "03_how_a_pull_works.ipynb",
        "04_scripted_exports.ipynb",
    ]
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        tagged = [
            c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])
        ]
        assert len(tagged) == 1, name
        assert 'REGISTRY = "docker.io"' in tagged[0].source, name
        assert all(
            not c.get("outputs") for c in notebook.cells if c.cell_type == "code"
        )


def test_01_explore_an_image(registry, demo, tmp_path):
    arm = demo["records"]["linux/arm64"]

    notebook = run_notebook(
        "01_explore_an_image.ipynb",
        tmp_path,
        REGISTRY=registry.host,
        IMAGE="notebook/demo:1",
        PLATFORM="linux/arm64",
    )

    text = outputs(notebook)
    assert arm["digest"] in text  # the image summary
    assert demo["index"]["digest"] in text
    assert "RUN /bin/sh -c install-app # buildkit" in text  # layers and history
    assert "/usr/bin/app" in text and "8080/tcp" in text  # the config
    assert "etc/motd" in text and "usr/bin/sh" in text  # files of layer 0
    assert "etc/.wh.motd" in text  # the whiteout in the top layer
    assert "image/png" in mime_types(notebook)  # the bar chart


def test_02_pick_and_download(registry, demo, tmp_path, loader_dir):
    amd = demo["records"]["linux/amd64"]

    notebook = run_notebook(
        "02_pick_and_download.ipynb",
        tmp_path,
        REGISTRY=registry.host,
        IMAGE="notebook/demo:1",
        OUTPUT_DIR="images",
    )

    assert WIDGET_VIEW in mime_types(notebook)  # the form was displayed
    text = outputs(notebook)
    assert "Nothing downloaded yet" in text
    assert f"image:    {registry.host}/notebook/demo:1" in text
    archive = tmp_path / "images" / "from_code.tar"
    assert amd["digest"] in text and archive.is_file()
    loaded = podman_load(archive, loader_dir)
    assert loaded == [f"{registry.host}/notebook/demo:1"]


@pytest.mark.parametrize(
    "server", ["registry", "token_registry"], ids=["open", "token"]
)
def test_03_how_a_pull_works(request, server, tmp_path):
    target = request.getfixturevalue(server)
    user, password = next(iter(target.users.items()), (None, None))
    pusher = Pusher(
        target.url, auth=(user, password) if user else None, verify=target.verify
    )
    records, index = push_demo(pusher, "teach/walkthrough", "1")
    options = {"ca_cert": str(target.ca_cert)} if target.ca_cert else {}

    notebook = run_notebook(
        "03_how_a_pull_works.ipynb",
        tmp_path,
        label=request.node.callspec.id,
        REGISTRY=target.host,
        IMAGE="teach/walkthrough:1",
        PLATFORM="linux/arm64",
        OPTIONS=options,
    )

    text = outputs(notebook)
    arm = records["linux/arm64"]
    assert index["digest"] in text and arm["digest"] in text
    assert arm["config_digest"] in text and arm["layer_digests"][0] in text
    assert (tmp_path / "pulled.tar").is_file()
    assert "eyJ" not in json.dumps(notebook)  # no token (a JWT) anywhere
    if server == "token_registry":
        assert "'scheme': 'bearer'" in text and "'status': 401" in text
        assert target.token_server.realm in text  # the token request's row
        assert "Bearer &lt;redacted&gt;" in text or "Bearer <redacted>" in text
    else:
        assert "'status': 200" in text and "'scheme': ''" in text


def test_04_scripted_exports(registry, images, demo, tmp_path):
    exports = [
        ("notebook/demo:1", "linux/amd64"),
        ("notebook/demo:1", "linux/arm64"),
        ("multi/docker:1", "linux/arm/v7"),
        ("notebook/demo:no-such-tag", "linux/amd64"),
    ]

    notebook = run_notebook(
        "04_scripted_exports.ipynb",
        tmp_path,
        REGISTRY=registry.host,
        EXPORTS=exports,
        OUTPUT_DIR="exports",
    )

    text = outputs(notebook)
    assert "3 archives" in text
    assert "FAILED" in text and "no-such-tag" in text
    folder = tmp_path / "exports"
    written = {
        "demo_1_linux-amd64.tar": demo["records"]["linux/amd64"],
        "demo_1_linux-arm64.tar": demo["records"]["linux/arm64"],
        "docker_1_linux-arm-v7.tar": images["multi/docker:1"]["platforms"][
            "linux/arm/v7"
        ],
    }
    for name, record in written.items():
        summary = skopeo_inspect(folder / name)
        assert summary["Layers"] == record["diff_ids"], name
        with tarfile.open(folder / name) as archive:
            assert archive.extractfile("manifest.json")
    results = (folder / "results.csv").read_text()
    assert (
        results.splitlines()[0] == "reference,platform,digest,path,bytes,seconds,error"
    )
    assert len(results.splitlines()) == 1 + len(exports)
