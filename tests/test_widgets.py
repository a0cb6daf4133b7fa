"""The download form, driven from code as its buttons and dropdowns would."""

from __future__ import annotations

import ipywidgets
import pytest

import dgetkit
from dgetkit.widgets import Picker, _natural_key
from tests.support.loaders import podman_inspect, podman_load, skopeo_inspect

pytestmark = pytest.mark.integration


class Counter:
    """A tqdm-like object that adds up the bytes it is told about."""

    total = None

    def __init__(self):
        self.n = 0
        self.closed = False

    def update(self, n):
        self.n += n

    def close(self):
        self.closed = True


def ref(registry, name: str) -> str:
    return f"{registry.host}/{name}"


def test_the_form_fills_itself_from_the_registry(registry, images, tmp_path):
    form = dgetkit.picker(ref(registry, "multi/oci:1"), output_dir=tmp_path / "out")

    assert isinstance(form, Picker) and isinstance(form.widget, ipywidgets.VBox)
    assert form.error is None
    assert form.tag_dropdown.options == ("1",)
    expected = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/arm/v6")
    assert form.platform_dropdown.options == expected  # attestations left out
    assert form.reference == ref(registry, "multi/oci:1")
    assert form.platform == str(dgetkit.Platform.host()).replace(
        "linux/arm64", "linux/arm64/v8"
    )
    record = images["multi/oci:1"]["platforms"][form.platform]
    assert form.layers["digest"].tolist() == record["layer_digests"]
    assert "dgetkit-test layer 1" in form.layers_html.value
    assert f"{len(record['layers'])} layers" in form.layers_html.value
    assert form.path_text.value.startswith(str(tmp_path / "out"))
    assert not form.download_button.disabled


def test_typing_a_repository_lists_its_tags_in_natural_order(
    registry, images, tmp_path
):
    form = dgetkit.picker(output_dir=tmp_path)
    assert form.reference is None and form.download_button.disabled

    form.repository_text.value = ref(
        registry, "tags/many:t07"
    )  # as if Enter was pressed

    assert list(form.tag_dropdown.options) == images["tags/many"]["tags"]
    assert form.tag_dropdown.value == "t07"
    assert form.reference == ref(registry, "tags/many:t07")
    assert form.platform_dropdown.options == ("linux/amd64",)

    form.tag_dropdown.value = "t19"
    assert form.reference == ref(registry, "tags/many:t19")
    assert form.path_text.value == str(tmp_path / "many_t19_linux-amd64.tar")


def test_choose_a_platform_and_download_it(registry, images, tmp_path, loader_dir):
    record = images["multi/docker:1"]["platforms"]["linux/arm/v6"]
    form = dgetkit.picker(ref(registry, "multi/docker:1"), output_dir=tmp_path / "out")
    form.progress = counter = Counter()

    form.platform_dropdown.value = "linux/arm/v6"
    assert form.platform == "linux/arm/v6"
    assert form.layers["digest"].tolist() == record["layer_digests"]
    form.download_button.click()

    assert form.error is None, form.error
    result = form.result
    assert result.path == tmp_path / "out" / "docker_1_linux-arm-v6.tar"
    assert result.digest == record["digest"]
    assert counter.n == sum(layer.size for layer in record["layers"])
    assert str(result.path) in form.status_html.value
    assert record["digest"] in form.status_html.value
    loaded = podman_load(result.path, loader_dir)
    inspected = podman_inspect(loaded[0], loader_dir)
    assert (inspected["Architecture"], inspected["Variant"]) == ("arm", "v6")
    assert inspected["Id"] == record["config_digest"].split(":")[1]


def test_an_existing_file_is_kept_unless_the_box_is_ticked(registry, images, tmp_path):
    form = dgetkit.picker(ref(registry, "single/oci-gzip:1"), output_dir=tmp_path)
    form.progress = False
    form.path_text.value = str(tmp_path / "image.tar")
    (tmp_path / "image.tar").write_bytes(b"precious")

    form.download_button.click()
    assert "already exists" in form.error and "replace an existing file" in form.error
    assert (tmp_path / "image.tar").read_bytes() == b"precious"
    assert form.result is None and "dgetkit-error" in form.status_html.value

    form.overwrite_checkbox.value = True
    form.download_button.click()
    assert form.error is None
    summary = skopeo_inspect(tmp_path / "image.tar")
    assert summary["Labels"] == {"org.dgetkit.test": "single/oci-gzip"}
    assert summary["Layers"] == images["single/oci-gzip:1"]["diff_ids"]


ERROR_CASES = [
    ("{host}/no/such", {}, "repository does not exist"),
    ("127.0.0.1:9/nothing/here", {"retries": 0}, "cannot reach 127.0.0.1:9"),
    ("Bad Name!", {}, "not a valid image reference"),
    ("{basic}/any/thing", {"username": "bob", "password": "wrong"}, "denied"),
]


@pytest.mark.parametrize(
    "typed, settings, message",
    ERROR_CASES,
    ids=["no-such-repository", "no-network", "bad-reference", "bad-credentials"],
)
def test_errors_show_as_a_message_in_the_form(
    registry, basic_registry, tmp_path, typed, settings, message
):
    typed = typed.format(host=registry.host, basic=basic_registry.host)

    form = dgetkit.picker(typed, output_dir=tmp_path, **settings)

    assert message in form.error
    shown = form.status_html.value
    assert "dgetkit-error" in shown and "Traceback" not in shown
    assert form.tag_dropdown.options == () and form.reference is None
    assert form.download_button.disabled
    if "password" in settings:
        assert settings["password"] not in shown


def test_a_failing_download_is_a_message_too(registry, images, tmp_path):
    form = dgetkit.picker(ref(registry, "single/oci-plain:1"), output_dir=tmp_path)
    form.path_text.value = str(tmp_path / "missing-folder" / "x.tar")

    assert form.download() is None
    assert "does not exist" in form.error
    assert not (tmp_path / "missing-folder").exists()


def test_steps_out_of_order_explain_what_to_do(tmp_path):
    form = Picker(output_dir=tmp_path)
    form.choose_tag("1")
    assert form.error == "type a repository first"
    form.download()
    assert form.error == "choose an image first"


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["3.10", "3.9", "3.20", "3.19"], ["3.9", "3.10", "3.19", "3.20"]),
        (["latest", "edge", "3.2", "3.2.1"], ["3.2", "3.2.1", "edge", "latest"]),
        (["v10-rc", "v9-rc", "v9"], ["v9", "v9-rc", "v10-rc"]),
    ],
    ids=["minor-versions", "words-after-numbers", "prefixed"],
)
def test_tags_sort_the_way_people_read_versions(tags, expected):
    assert sorted(tags, key=_natural_key) == expected
