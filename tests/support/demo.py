"""Images for the notebook-toolkit tests: a realistic demo image, many layers.

The demo image looks like something built from a Dockerfile: a multi-platform
OCI index with BuildKit-style attestations, three layers per platform (the
last one deletes a file with a whiteout), a history with empty steps between
the layer-making ones, and a config with an entrypoint, a user, a working
directory, exposed ports and labels.
"""

from __future__ import annotations

import json

from tests.support.images import (
    Pusher,
    Symlink,
    canonical_json,
    make_config,
    make_layer,
    push_recorded,
    split_platform,
    whiteout,
)

DEMO_PLATFORMS = ("linux/amd64", "linux/arm64")
DEMO_HISTORY = [
    {"created_by": "/bin/sh -c #(nop) ADD file:rootfs.tar in /"},
    {"created_by": "/bin/sh -c #(nop)  ENV APP_HOME=/srv/app", "empty_layer": True},
    {"created_by": "RUN /bin/sh -c install-app # buildkit", "comment": "buildkit"},
    {"created_by": "EXPOSE map[8080/tcp:{}]", "empty_layer": True},
    {"created_by": "RUN /bin/sh -c rm /etc/motd # buildkit"},
    {"created_by": 'CMD ["serve"]', "empty_layer": True},
]
DEMO_SETTINGS = {
    "User": "app",
    "WorkingDir": "/srv/app",
    "Entrypoint": ["/usr/bin/app"],
    "Cmd": ["serve"],
    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_HOME=/srv/app"],
    "ExposedPorts": {"8080/tcp": {}},
    "Labels": {"org.opencontainers.image.title": "demo", "note": "<b>not bold</b>"},
}


def demo_layers(platform: str) -> list:
    """A base root file system, an application layer, and a deleting layer."""
    base = make_layer(
        {
            "etc/os-release": b"NAME=demo\n",
            "etc/motd": b"welcome\n",
            "bin/sh": b"#!shell\n" * 64,
            "usr/bin/sh": Symlink("/bin/sh"),
        }
    )
    app = make_layer(
        {
            "usr/bin/app": b"binary for " + platform.encode() + b"\n" * 4096,
            "srv/app/config.json": b'{"port": 8080}\n',
        },
        "zstd",
    )
    removal = make_layer({whiteout("etc/motd"): b""})
    return [base, app, removal]


def demo_config(layers, platform: str) -> bytes:
    """The image config: settings above, history with empty steps."""
    config = json.loads(
        make_config(layers, **split_platform(platform), history=DEMO_HISTORY)
    )
    config["config"] = dict(DEMO_SETTINGS)
    return canonical_json(config)


def push_demo(pusher: Pusher, repository: str = "notebook/demo", tag: str = "1"):
    """Push the demo index; return ``{platform: image record}`` and the index."""
    records = {}
    for platform in DEMO_PLATFORMS:
        layers = demo_layers(platform)
        config = demo_config(layers, platform)
        records[platform] = push_recorded(
            pusher, repository, None, layers, config, "oci"
        )
    children = [
        {
            "mediaType": record["media_type"],
            "digest": record["digest"],
            "size": record["size"],
            "platform": split_platform(record["platform"]),
        }
        for record in records.values()
    ]
    index = pusher.push_index(repository, tag, children, "oci")
    return records, index


def push_many_layers(pusher: Pusher, count: int, repository="many/layers", tag="1"):
    """Push a single-platform image of ``count`` small layers; return its record.

    Every third history step is an empty one, so pairing must skip them.
    """
    layers = [
        make_layer({f"layer/{i:03d}": f"{i}\n".encode() * i}) for i in range(count)
    ]
    history = []
    for i in range(count):
        if i % 3 == 0:
            history.append({"created_by": f"ENV STEP={i}", "empty_layer": True})
        history.append({"created_by": f"RUN make layer {i}"})
    config = make_config(layers, history=history)
    return push_recorded(pusher, repository, tag, layers, config, "docker")
