"""`fileio.as_path` and the file helpers on gs:// (sum_jax/cloud.py), against the Cloud
Storage emulator: which paths are refused, what a failing folder write leaves, the owner
record that still guards a gs:// folder, and content fingerprints that do not depend on
where the bytes are."""

from __future__ import annotations

from pathlib import Path

import pytest

from sum_jax import cloud, fileio, fingerprint, output_dir
from sum_jax.cli import InputError


@pytest.mark.parametrize(
    "value,expect",
    [
        ("s3://bucket/run", "--workdir=s3://bucket/run: s3: paths are not supported"),
        ("http://host/run", "http: paths are not supported"),
        ("gs:/bucket/run", "gs:// takes two slashes"),
        ("gs:bucket/run", "gs: paths are not supported"),
        ("GS://bucket/run", "GS: paths are not supported"),
        ("gs://Bucket/run", "'Bucket' is not a Cloud Storage bucket name"),
        ("gs:///run", "'' is not a Cloud Storage bucket name"),
    ],
)
def test_other_schemes_are_refused_naming_the_field(value, expect):
    with pytest.raises(InputError, match="gs://BUCKET/PATH|bucket name") as e:
        fileio.as_path(value, "--workdir")
    assert expect in str(e.value)


def test_local_paths_stay_pathlib():
    for value in ("runs/a", "/tmp/x", "~/y", "C:/data", "runs/a:b", "pretrained:small"):
        path = fileio.as_path(value, "--workdir")
        assert type(path) is type(Path(value)) and str(path) == str(Path(value))
    assert str(fileio.as_path("gs://b-1/x/y")) == "gs://b-1/x/y"
    assert not cloud.is_remote(Path("gs://b/x"))  # "gs:/b/x": a local path (refused above)


def _tree(root) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in cloud.walk_files(root)}


def test_folder_swapped_in_whole_and_kept_when_the_write_fails(gcs):
    target = gcs.path("swap", "model")
    with fileio.atomic_dir(target) as tmp:
        (tmp / "params").mkdir()
        (tmp / "params" / "a.bin").write_bytes(b"old")
        (tmp / "sam_config.json").write_text("{}")
    with pytest.raises(RuntimeError), fileio.atomic_dir(target) as tmp:
        (tmp / "sam_config.json").write_text('{"new": 1}')
        raise RuntimeError("the save failed")
    assert _tree(target) == {"params/a.bin": b"old", "sam_config.json": b"{}"}
    with fileio.atomic_dir(target) as tmp:
        (tmp / "sam_config.json").write_text('{"new": 2}')
    assert _tree(target) == {"sam_config.json": b'{"new": 2}'}  # old files gone
    assert not cloud.files(gcs.path("swap", ".model.partial"))
    with pytest.raises(FileExistsError), fileio.atomic_dir(target, overwrite=False):
        pass


def test_files_appends_and_atomic_files(gcs):
    log = gcs.path("files", "metrics.jsonl")
    fileio.append_text(log, "1\n")
    fileio.append_text(log, "2\n")
    assert fileio.as_path(log).read_text() == "1\n2\n"
    folder = gcs.path("files", "seg")
    fileio.atomic_write(f"{folder}/overlay.png", b"stale")
    with fileio.atomic_files(folder, replaces=("mask.png", "overlay.png")) as staging:
        (staging / "mask.png").write_bytes(b"mask")
    assert _tree(folder) == {"mask.png": b"mask"}
    with fileio.atomic_path(f"{folder}/result.json") as tmp:
        tmp.write_text("{}")
    assert fileio.as_path(f"{folder}/result.json").read_text() == "{}"


def test_owner_record_guards_a_gs_folder(gcs):
    run = gcs.path("owned", "run")
    with output_dir.claim(run, "train", "--workdir") as folder:
        fileio.atomic_write(folder / "metrics.jsonl", "{}\n")
    assert output_dir.owner(run) == ("train", f"recorded in {output_dir.OWNER_FILE}")
    with pytest.raises(InputError, match=r"--workdir=gs://.*/owned/run: this folder holds a "
                       r"training run.*--workdir=gs://.*/owned/run_evaluate"):  # fmt: skip
        output_dir.check_owner(run, "evaluate", "--workdir")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        fileio.check_output_dir(f"{run}/metrics.jsonl/x", "--workdir")


def test_fingerprints_are_of_content_wherever_it_is(gcs, tmp_path):
    (tmp_path / "m" / "params").mkdir(parents=True)
    (tmp_path / "m" / "params" / "a").write_bytes(b"\x00" * 100)
    (tmp_path / "m" / "params.b").write_bytes(b"x")  # sorts between "params" and "params/a"
    (tmp_path / "m" / "sam_config.json").write_text("{}")
    remote = gcs.path("fp", "m")
    cloud.upload_tree(tmp_path / "m", remote)
    assert fingerprint.tree_hash(remote) == fingerprint.tree_hash(tmp_path / "m")
    assert fingerprint.folder_hashes(remote) == fingerprint.folder_hashes(tmp_path / "m")


def test_local_mirror_follows_the_objects(gcs):
    folder = gcs.path("mirror", "data")
    fileio.atomic_write(f"{folder}/a", b"1")
    fileio.atomic_write(f"{folder}/sub/b", b"2")
    local = cloud.local_copy(folder)
    assert (local / "a").read_bytes() == b"1" and (local / "sub" / "b").read_bytes() == b"2"
    fileio.atomic_write(f"{folder}/a", b"changed")
    fileio.as_path(f"{folder}/sub/b").unlink()
    assert cloud.local_copy(folder) == local
    assert (local / "a").read_bytes() == b"changed" and not (local / "sub" / "b").exists()


def test_model_on_gs_is_packed_and_loads_from_either_place(gcs, tmp_path):
    """A model directory saved to gs:// holds its arrays in Orbax's OCDBT layout (a few
    objects, not one folder per array); it loads back exactly, there and copied to a local
    folder, where the same model saves one folder per array."""
    import jax
    import numpy as np
    from flax import nnx

    from sum_jax import checkpointing
    from sum_jax.models.sam import build_sam

    model = build_sam("tiny", rngs=nnx.Rngs(3))
    remote = gcs.path("models", "tiny")
    checkpointing.save_sam(model, remote)
    checkpointing.save_sam(model, tmp_path / "plain")
    names = {name for name, _ in cloud.walk_files(remote)}
    assert "params/manifest.ocdbt" in names
    assert len(names) < 0.25 * len(list((tmp_path / "plain").rglob("*")))
    assert not (tmp_path / "plain" / "params" / "manifest.ocdbt").exists()
    local = cloud.local_copy(remote)
    expected = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model)))
    for where in (remote, local):
        checkpointing.check_arrays(where)
        loaded = jax.tree.leaves(nnx.to_pure_dict(nnx.state(checkpointing.load_sam(where))))
        for a, b in zip(expected, loaded, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
