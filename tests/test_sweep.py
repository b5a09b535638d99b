"""gpuprobe sweep without a cluster: the batch script, host lists, result matching,
exit codes, and the one-line errors when SLURM is missing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpuprobe import exitcodes
from gpuprobe.run import sweep as sw
from gpuprobe.cli.main import cli, main
from gpuprobe.store.results import SUFFIX, write_atomic


def _spec(tmp_path: Path, **kw) -> sw.SweepSpec:
    base = {"results_dir": tmp_path / "res", "log_dir": tmp_path / "logs", "sweep_id": "sweep-test-1"}
    return sw.SweepSpec(**{**base, **kw})


@pytest.mark.parametrize("spec, hosts", [
    ("gpu01", ["gpu01"]),
    ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
    ("gpu[08-10,15],login", ["gpu08", "gpu09", "gpu10", "gpu15", "login"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("a,a,b", ["a", "b"]),
])
def test_expand_hostlist(spec: str, hosts: list[str]) -> None:
    assert sw.expand_hostlist(spec) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-03", "gpu]1[", "gpu[a-b]", "a,,b", "gpu[1-x]"])
def test_expand_hostlist_rejects(bad: str) -> None:
    with pytest.raises(sw.SweepError):
        sw.expand_hostlist(bad)


def test_script_one_task_per_node_with_absolute_paths(tmp_path: Path) -> None:
    spec = _spec(tmp_path, partition="l40s", nodelist="gpu[01-04]", stage="buffer", device="cuda", timeout=90,
                 options=("buffer.capacity=1e5",), gpus_per_node=1, sbatch_args=("--account=proj",),
                 checkout=Path("/opt/src/gpuprobe"), python="/opt/venv/bin/python")
    text = sw.sbatch_script(spec)
    directives = [line[len("#SBATCH "):] for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert "--nodes=4" in directives and "--ntasks-per-node=1" in directives
    assert "--partition=l40s" in directives and "--nodelist=gpu[01-04]" in directives
    assert "--gpus-per-node=1" in directives and "--account=proj" in directives
    assert f"--chdir={tmp_path / 'logs'}" in directives          # never the submitting cwd
    assert any(d.startswith(f"--output={tmp_path / 'logs'}/sweep-test-1-") for d in directives)
    assert "export GPUPROBE_SWEEP_ID=sweep-test-1" in text
    assert "export PYTHONPATH=/opt/src/gpuprobe${PYTHONPATH:+:$PYTHONPATH}" in text
    srun = next(shlex.split(line) for line in text.splitlines() if line.startswith("srun "))
    assert srun[:4] == ["srun", "--nodes=4", "--ntasks-per-node=1", "--kill-on-bad-exit=0"]
    probe = srun[srun.index("/opt/venv/bin/python"):]
    assert probe == ["/opt/venv/bin/python", "-m", "gpuprobe", "run", "--results", str(tmp_path / "res"),
                     "--device", "cuda", "--stage", "buffer", "--timeout", "90", "--set", "buffer.capacity=1e5"]


def test_script_quotes_odd_paths_and_is_valid_bash(tmp_path: Path) -> None:
    spec = _spec(tmp_path, results_dir=tmp_path / "my results", options=("alloc.note=a b;c",), only=True,
                 stage="alloc")
    text = sw.sbatch_script(spec)
    assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True, check=False).returncode == 0
    srun = next(shlex.split(line) for line in text.splitlines() if line.startswith("srun "))
    assert str(tmp_path / "my results") in srun and "alloc.note=a b;c" in srun and "--only" in srun


def test_default_nodes_is_one_and_no_partition_directive(tmp_path: Path) -> None:
    text = sw.sbatch_script(_spec(tmp_path))
    assert "#SBATCH --nodes=1" in text and "--partition" not in text


def _result(folder: Path, host: str, sweep_id: str | None, status: str = "pass", code: int = 0,
            started: str = "2026-01-01T00:00:00Z") -> Path:
    env = {sw.SWEEP_ENV: sweep_id} if sweep_id else {}
    doc = {"schema": 1, "run_id": f"r-{host}-{started[-3:-1]}", "started_at": started,
           "fingerprint": {"hostname": host, "gpus": [{"name": "NVIDIA L40S"}]},
           "config": {"environment": env}, "stages": [{"stage": "alloc", "gpu": 0, "status": status}],
           "summary": {"status": status, "exit_code": code}}
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / f"{doc['run_id']}{SUFFIX}", doc)


def test_collect_keeps_only_this_sweep_and_skips_bad_files(tmp_path: Path, caplog) -> None:
    res = tmp_path / "res"
    _result(res, "gpu01", "sweep-a")
    _result(res, "gpu02", "sweep-a", "hang", 3)
    _result(res, "gpu03", "sweep-b")
    _result(res, "gpu04", None)
    (res / f"broken{SUFFIX}").write_text("{half")
    docs = sw.collect(res, "sweep-a")
    assert sorted(d["fingerprint"]["hostname"] for d in docs) == ["gpu01", "gpu02"]
    assert "broken" in caplog.text

    rows = sw.outcomes(docs, ["gpu01", "gpu02", "gpu05"])
    assert [(r.node, r.status, r.exit_code) for r in rows] == [
        ("gpu01", "pass", 0), ("gpu02", "hang", 3), ("gpu05", "no result", None)]
    assert rows[0].stages == {"alloc[0]": "pass"} and rows[0].gpus == ["NVIDIA L40S"]


def test_outcomes_takes_each_nodes_latest_run(tmp_path: Path) -> None:
    res = tmp_path / "res"
    _result(res, "gpu01.cluster", "s", "fail", 1, started="2026-01-01T00:00:01Z")
    _result(res, "gpu01.cluster", "s", "pass", 0, started="2026-01-01T00:00:09Z")
    rows = sw.outcomes(sw.collect(res, "s"), ["gpu01"])
    assert [(r.node, r.status) for r in rows] == [("gpu01", "pass")]


@pytest.mark.parametrize("codes, state, expected", [
    ([0, 0], "COMPLETED", exitcodes.OK),
    ([0, 1], "COMPLETED", exitcodes.FAILED),
    ([0, None], "COMPLETED", exitcodes.FAILED),
    ([3, 1], "COMPLETED", exitcodes.HANG),
    ([0], "TIMEOUT(RUNNING)", exitcodes.TEMPFAIL),
    ([], "FAILED", exitcodes.FAILED),
])
def test_sweep_exit_code(codes, state, expected) -> None:
    rows = [sw.NodeOutcome(f"n{i}", None, "x", c, {}, [], None) for i, c in enumerate(codes)]
    assert sw.sweep_exit_code(rows, state) == expected


def test_cli_dry_run_prints_the_script(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sweep", "-p", "debug", "-N", "2", "--device", "cpu", "--only", "--stage",
                                      "alloc", "--set", "alloc.cpu_max_mib=32", "--results", str(tmp_path / "r"),
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("#!/bin/bash\n")
    assert "#SBATCH --nodes=2" in result.output and f"{sys.executable} -m gpuprobe run" in result.output
    assert f"--results {tmp_path / 'r'}" in result.output
    assert not (tmp_path / "r").exists()        # a dry run creates nothing


def test_cli_relative_results_become_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--results", "rel", "--dry-run"])
    assert f"--results {tmp_path / 'rel'}" in result.output


def _run_main(args: list[str], env_path: str, capsys) -> tuple[int, str]:
    old = os.environ["PATH"]
    os.environ["PATH"] = env_path
    try:
        with pytest.raises(SystemExit) as exc:
            main(args)
    finally:
        os.environ["PATH"] = old
    return exc.value.code, capsys.readouterr().err


def test_missing_sbatch_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    code, err = _run_main(["sweep", "-p", "debug", "--results", str(tmp_path)], str(tmp_path / "empty"), capsys)
    assert code == exitcodes.USAGE
    assert err.strip().count("\n") == 0 and "sbatch not found on PATH" in err


def test_unknown_partition_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    """Fake SLURM client commands that answer like 22.05 does for a partition it lacks."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"sbatch": "exit 0", "squeue": "exit 0",
               "scontrol": 'echo "Partition nope not found" >&2; exit 1',
               "sinfo": 'printf "debug\\ngpu\\n"'}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    code, err = _run_main(["sweep", "-p", "nope", "--results", str(tmp_path / "r")], str(bin_dir), capsys)
    assert code == exitcodes.USAGE
    assert err.strip() == "Error: unknown partition 'nope' (known: debug, gpu)"


def test_nodes_and_nodelist_exclude_each_other(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["sweep", "-N", "2", "-w", "a,b", "--dry-run"])
    assert result.exit_code == 2 and "not both" in result.output


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["sweep", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--json" in result.output
