"""Result files: atomic writes, readable errors, folder resolution, statuses."""

from __future__ import annotations

import json
import os

import pytest

from gpuprobe import paths

from gpuprobe.store import results
from gpuprobe.redact import is_secret_name, recorded_environment


def test_write_atomic_leaves_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.result.json"
    results.write_atomic(target, {"schema": 1, "stages": []})

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        results.write_atomic(target, {"schema": 1, "stages": [{"stage": "new", "status": "pass"}]})
    assert json.loads(target.read_text())["stages"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["r.result.json"]  # no temp file left


@pytest.mark.parametrize("content, words", [
    ("", "not valid JSON"), ('{"schema": 1', "not valid JSON"), ("[]", "not a gpuprobe result"),
    ('{"schema": 99, "stages": []}', "newer"),
])
def test_read_result_errors_say_what(tmp_path, content, words):
    bad = tmp_path / "bad.result.json"
    bad.write_text(content)
    with pytest.raises(results.ResultFileError, match=words):
        results.read_result(bad)


def test_results_dir_never_from_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    resolved = paths.resolve_results_dir(None)
    # runs are written to the user data folder, never the checkout's tracked reports/
    assert resolved.source == "user data folder"
    assert resolved.path == tmp_path / "data" / "gpuprobe" / "results"
    # readers take the shipped field reports too, read-only
    assert [r.path for r in paths.evidence_dirs()] == [resolved.path, paths.checkout_root() / "reports"]
    monkeypatch.setenv(paths.ENV, "rel/dir")
    env_resolved = paths.resolve_results_dir(None)
    assert env_resolved.path == (tmp_path / "rel/dir") and env_resolved.path.is_absolute()
    assert paths.resolve_results_dir(tmp_path / "x").source == "--results"


def test_exit_codes_and_worst_status():
    assert results.exit_code_for(["pass", "skip"]) == 0
    assert results.exit_code_for(["pass", "fail"]) == 1
    assert results.exit_code_for(["crash", "hang"]) == 3
    assert results.exit_code_for(["slow"]) == 3
    assert results.worst_status(["pass", "hang-unkillable", "hang"]) == "hang-unkillable"


def test_find_run_by_prefix_and_latest(tmp_path):
    a = results.write_atomic(tmp_path / "20260101T000000Z-a-111111.result.json", {"schema": 1, "stages": []})
    b = results.write_atomic(tmp_path / "20260102T000000Z-b-222222.result.json", {"schema": 1, "stages": []})
    os.utime(a, (1, 1))
    assert results.find_run(tmp_path, "20260101") == a
    assert results.find_run(tmp_path, "latest") == b
    with pytest.raises(FileNotFoundError, match="ambiguous"):
        results.find_run(tmp_path, "2026")


def test_redaction_names():
    for name in ("WANDB_API_KEY", "GITHUB_TOKEN", "MY_SECRET", "DB_PASSWORD", "AWS_ACCESS_KEY_ID", "HF_TOKEN"):
        assert is_secret_name(name)
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "OMP_NUM_THREADS"):
        assert not is_secret_name(name)
    env = recorded_environment({"HOME": "/root", "SLURM_JOB_ID": "7", "GPUPROBE_X": "https://u:pw@host/x"})
    assert env == {"GPUPROBE_X": "https://<redacted>@host/x", "SLURM_JOB_ID": "7"}


def test_written_files_get_the_umask_mode_not_a_private_one(tmp_path):
    old = os.umask(0o022)
    try:
        path = results.write_atomic(tmp_path / "r.result.json", {"schema": 1, "stages": []})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600: results are shared


def test_a_named_results_folder_that_is_not_there_is_an_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV, raising=False)
    with pytest.raises(paths.ResultsDirMissing, match=f"{tmp_path / 'nope'} \\(from --results\\) does not exist"):
        paths.evidence_dirs([tmp_path / "nope"])
    monkeypatch.setenv(paths.ENV, str(tmp_path / "gone"))
    with pytest.raises(paths.ResultsDirMissing, match="from \\$GPUPROBE_RESULTS"):
        paths.evidence_dirs()
    (tmp_path / "file").write_text("")
    with pytest.raises(paths.ResultsDirMissing, match="is not a folder"):
        paths.evidence_dirs([tmp_path / "file"])
