"""`clipcov download` faults (issue #19): exit codes that tell the truth, only http(s) URLs, one-line
errors for a bad --out or recipe value, no orphan process after a SIGKILL. Real img2dataset against a
server on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds

from clipcov_cli.corpus import CorpusServer
from tests.cli_helpers import one_error_line
from tests.export_helpers import jpeg


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    for i in range(6):
        (root / f"{i}.jpg").write_bytes(jpeg(40 * i, size=32))
    with CorpusServer(root, stall_seconds=30.0) as srv:
        yield srv, root


def url_list(path: Path, urls: list[str]) -> Path:
    pd.DataFrame({"url": urls, "caption": [f"c{i}" for i in range(len(urls))]}).to_parquet(path)
    return path


def samples(out: Path) -> list[dict]:
    tars = sorted(str(p) for p in out.glob("*.tar"))
    return list(wds.WebDataset(tars, shardshuffle=False)) if tars else []


def test_a_download_with_no_success_exits_1_with_the_summary(tmp_path, server, cli):
    srv, _ = server
    urls = url_list(tmp_path / "u.parquet", [f"{srv.base_url}/missing{i}.jpg" for i in range(5)])
    r = cli("download", urls, "--out", tmp_path / "out", "--threads", "2")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "download summary" in r.stderr and "error: no sample was downloaded" in r.stderr
    assert "Traceback" not in r.stderr


def test_min_success_sets_the_share_that_fails(tmp_path, server, cli):
    srv, _ = server
    urls = url_list(tmp_path / "u.parquet", [f"{srv.base_url}/{i}.jpg" for i in range(2)] +
                    [f"{srv.base_url}/missing{i}.jpg" for i in range(2)])
    r = cli("download", urls, "--out", tmp_path / "out", "--threads", "2", "--min-success", "0.75")
    assert r.returncode == 1 and "below --min-success 75%" in r.stderr, r.stderr[-2000:]
    r = cli("download", urls, "--out", tmp_path / "out", "--threads", "2", "--min-success", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    line = one_error_line(cli("download", urls, "--out", tmp_path / "o2", "--min-success", "2"))
    assert "--min-success" in line


def test_file_urls_are_refused_and_counted_unless_allowed(tmp_path, server, cli):
    srv, root = server
    local = tmp_path / "private.jpg"
    local.write_bytes(jpeg(7, size=32))
    lines = [f"{srv.base_url}/0.jpg", f"{srv.base_url}/1.jpg", local.as_uri(), "file:///etc/hostname",
             "FILE:///etc/passwd", "ftp://127.0.0.1/x.jpg"]
    src = tmp_path / "u.tsv"
    src.write_text("url\tcaption\n" + "".join(f"{u}\tc{i}\n" for i, u in enumerate(lines)))
    r = cli("download", src, "--out", tmp_path / "out", "--threads", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    got = samples(tmp_path / "out")
    assert len(got) == 2 and all(s["txt"].decode() in ("c0", "c1") for s in got)
    assert "refused lines" in r.stderr and " 4 " in r.stderr.split("refused lines")[1].splitlines()[0] + " "
    # opted in, from a parquet list (copied without its refused ftp line): the local jpg is fetched
    urls = url_list(tmp_path / "u.parquet", lines)
    r = cli("download", urls, "--out", tmp_path / "out3", "--threads", "2", "--allow-file-urls")
    assert r.returncode == 0, r.stderr[-2000:]
    assert {s["txt"].decode() for s in samples(tmp_path / "out3")} >= {"c0", "c1", "c2"}
    assert " 1 " in r.stderr.split("refused lines")[1].splitlines()[0] + " "


def test_out_an_existing_file_and_a_bad_recipe_value_are_one_line(tmp_path, server, cli):
    srv, _ = server
    urls = url_list(tmp_path / "u.parquet", [f"{srv.base_url}/0.jpg"])
    f = tmp_path / "file"
    f.write_text("x")
    line = one_error_line(cli("download", urls, "--out", f))
    assert "not a folder" in line and f.read_text() == "x"
    recipe = tmp_path / "r.yaml"
    recipe.write_text('threads: "many"\n')
    line = one_error_line(cli("download", urls, "--out", tmp_path / "out", "--recipe", recipe))
    assert "threads must be a whole number" in line and not (tmp_path / "out").exists()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_killed_download_leaves_no_orphan(tmp_path, server, cli):
    srv, _ = server
    urls = url_list(tmp_path / "u.parquet", [f"{srv.base_url}/stall/{i % 6}.jpg" for i in range(40)])
    proc = subprocess.Popen(cli.argv("download", urls, "--out", tmp_path / "out", "--threads", "2", "--processes", "2",
                                     "--shard-size", "5", "--timeout", "60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, kids = time.time() + 90, []
    while time.time() < deadline and len(kids) < 3:  # the pool's workers, img2dataset's logger, the tracker
        time.sleep(0.2)
        kids = _children(proc.pid)
    assert len(kids) >= 3, kids
    time.sleep(1.0)
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.2)
    left = [k for k in kids if _alive(k)]
    for k in left:  # do not leave them behind on failure either
        os.kill(k, signal.SIGKILL)
    assert not left, f"orphans: {left}"
