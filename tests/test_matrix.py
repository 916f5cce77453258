"""One scenario across kernels: kernel names (every package apt lists, metapackages, the user's own
build, 'host'), the version ranges bisect walks, and the matrix / compare / bisect commands.

Cost: the name and range tests run in well under a second each (apt-cache's lists, no download, no boot)."""

import shutil
import subprocess

import pytest
from conftest import cli_runner

from faultinj.cli import app
from faultinj.errors import SpecError
from faultinj.guest import kernels

runner = cli_runner()
needs_apt = pytest.mark.skipif(not shutil.which("apt-cache") or not kernels.debian_version("linux-image-6.1.0-57-amd64"),
                               reason="apt's lists do not name Debian 12's kernels here (run apt-get update)")


def _one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultinj: error:"), r.stderr
    return lines[0]


@pytest.mark.parametrize("a,b", [
    ("6.1.170-3", "6.1.172-1"), ("6.1.192-1", "6.1.192-2"), ("6.1.192-3", "6.12.100-1~deb12u1"),
    ("6.12.115-2~deb12u1", "6.12.115-2"), ("1:1.0", "2.0"), ("1.0~rc1", "1.0"), ("1.0", "1.0+b1"),
    ("1.0a", "1.0"), ("2.0-1", "2.0-1"), ("6.12.9-1", "6.12.10-1"),
])
def test_debian_version_order_is_dpkgs(a, b):
    ours = kernels.compare_versions(a, b)
    assert ours == -kernels.compare_versions(b, a)
    if shutil.which("dpkg"):
        for op, want in (("lt", ours < 0), ("eq", ours == 0), ("gt", ours > 0)):
            assert (subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode == 0) == want, (a, op, b)


@needs_apt
def test_every_kernel_package_form_apt_lists_resolves():
    assert kernels.package_name("linux-image-6.1.0-57-amd64") == "linux-image-6.1.0-57-amd64"
    assert kernels.package_name("linux-image-6.12.118+deb12-amd64") == "linux-image-6.12.118+deb12-amd64"
    # metapackages: the versioned package apt says they depend on today
    for meta in ("linux-image-amd64", "linux-image-6.12-amd64", "linux-image-cloud-amd64"):
        want = subprocess.run(["apt-cache", "depends", meta], capture_output=True, text=True).stdout
        got = kernels.package_name(meta)
        assert got.startswith("linux-image-") and got != meta and f"Depends: {got}" in want
    assert "cloud-amd64" in kernels.package_name("linux-image-cloud-amd64")
    host = kernels.resolve("host")
    assert host.is_host and host.label == "host" and host.vmlinuz is None


@pytest.mark.parametrize("name,needle", [
    ("not-a-kernel", "neither a vmlinuz path nor a Debian kernel package"),
    ("linux-image-6.1.0-57-amd64-dbg", "debug-symbols package"),
    ("linux-image-9.9.9-99-amd64", "cannot fetch kernel package"),
    ("linux-image-nosuch-amd64", "apt knows no kernel metapackage"),
    ("/no/such/bzImage", "not found"),
    ("/etc/hostname", "not a bootable x86 kernel image"),
])
def test_bad_kernel_names_are_one_line_exit_2(name, needle):
    with pytest.raises(SpecError, match=needle.replace(".", r"\.")):
        kernels.resolve(name)
    r = runner.invoke(app, ["doctor", "--kernel", name])
    assert r.exit_code == 2 and needle in _one_error_line(r)


def test_own_build_path_with_modules(tmp_path):
    """A bzImage's release comes from its boot header, whatever the file is called."""
    img = next(iter(sorted((kernels._cache()).glob("linux-image-*/boot/vmlinuz-*"))), None)
    if img is None:
        pytest.skip("no kernel package unpacked in the cache")
    release = img.name.removeprefix("vmlinuz-")
    shutil.copy(img, tmp_path / "bzImage")
    (tmp_path / "mods" / release).mkdir(parents=True)
    k = kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods")
    assert k.release == release and k.modules == tmp_path / "mods" and not k.is_host
    # the <release> directory itself is accepted too
    assert kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}/mods/{release}").modules == tmp_path / "mods"
    with pytest.raises(SpecError, match="holds no"):
        kernels.resolve(f"{tmp_path}/bzImage:{tmp_path}")
    assert kernels.resolve(f"{tmp_path}/bzImage").modules is None


@needs_apt
def test_kernel_range_is_apts_versions_in_order_one_flavour():
    r = kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    names = [p for p, _ in r]
    assert names[0] == "linux-image-6.1.0-47-amd64" and names[-1] == "linux-image-6.1.0-57-amd64"
    assert all(n.endswith("-amd64") and "-cloud-" not in n and "-rt-" not in n for n in names)
    versions = [v for _, v in r]
    assert all(kernels.compare_versions(a, b) < 0 for a, b in zip(versions, versions[1:]))
    # newer first: the same list reversed; metapackages resolve; 6.1 -> 6.12 crosses the series
    assert kernels.kernel_range("linux-image-6.1.0-57-amd64", "linux-image-6.1.0-47-amd64") == r[::-1]
    across = kernels.kernel_range("linux-image-6.1.0-56-amd64", "linux-image-6.12-amd64")
    assert across[0][0] == "linux-image-6.1.0-56-amd64" and "6.12." in across[-1][0] and len(across) > 3
    with pytest.raises(SpecError, match="different flavours"):
        kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-cloud-amd64")
    with pytest.raises(SpecError, match="same kernel"):
        kernels.kernel_range("linux-image-amd64", kernels.package_name("linux-image-amd64"))


# ---- bad input: one line, exit 2, nothing left (no QEMU, no work dir, no lab record) ---------------

def _leftovers() -> tuple:
    import glob
    import tempfile

    from faultinj.inject import lab

    qemu = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout.split()
    return (set(qemu), set(glob.glob(f"{tempfile.gettempdir()}/faultinj-vm-*")),
            {d["prefix"] for d in lab.recorded_labs()})


DROP = "scenarios/drop.yaml"


@pytest.mark.parametrize("args,needle", [
    (("run", DROP, "--kernel", "not-a-kernel"), "neither a vmlinuz path nor a Debian kernel package"),
    (("run", DROP, "--kernel", "host", "--kernel", "linux-image-9.9.9-99-amd64"), "cannot fetch kernel package"),
    (("run", DROP, "--kernel", "/etc/hostname"), "not a bootable x86 kernel image"),
    (("run", DROP, "--kernel", "host", "--keep"), "--keep keeps one lab"),
    (("run", DROP, "--repeat", "0"), "give 1 to 100 runs"),
    (("run", DROP, "--ovs", "/no/such/ovs"), "is not a directory"),
    (("run", DROP, "--ovs", "/etc"), "lacks ovsdb-server"),
    (("compare", DROP, "--before", "host"), "compare needs both sides"),
    (("compare", DROP, "--after", "linux-image-6.1.0-57-amd64"), "missing: --before"),
    (("compare", DROP, "--before", "host", "--after", "host"), "are the same"),
    (("compare", DROP, "--before", "host", "--after", "ovs=/etc"), "lacks"),
    (("compare", DROP, "--before", "ovs=/etc", "--after", "host"), "lacks"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64"), "give --good and --bad"),
    (("bisect", DROP, "--good", "host", "--bad", "linux-image-6.1.0-57-amd64"), "give a package name"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64", "--bad", "linux-image-6.1.0-57-rt-amd64"),
     "different flavours"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-56-amd64", "--bad", "linux-image-6.1.0-57-amd64"),
     "no kernel package lies between"),
    (("bisect", DROP, "--good", "linux-image-6.1.0-47-amd64", "--bad", "linux-image-9.9.9-99-amd64"),
     "apt knows no kernel package"),
])
def test_bad_input_across_kernels_is_one_line_exit_2_and_leaves_nothing(args, needle):
    if "bisect" in args and not shutil.which("apt-cache"):
        pytest.skip("no apt")
    before = _leftovers()
    r = runner.invoke(app, list(args))
    assert r.exit_code == 2 and needle in _one_error_line(r), r.output
    assert _leftovers() == before
    j = runner.invoke(app, [*args, "--json"])
    assert j.exit_code == 2 and __import__("json").loads(j.stdout)["exit_code"] == 2


# ---- bisect's search, on apt's real list, with a verdict given per version (no boot: the logic) ----

@needs_apt
@pytest.mark.parametrize("flip", range(1, 11))
def test_bisect_names_the_first_differing_version_in_about_log2_n_boots(flip, monkeypatch):
    """Each version's verdict is FAIL before index `flip` and PASS from it (a fix arriving there);
    bisect must name exactly that version, having run 2 ends + at most ceil(log2(n-1)) between."""
    import math

    from faultinj.scenario import load, matrix
    from faultinj.verdict import Check, Verdict

    versions = kernels.kernel_range("linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    index = {p: i for i, (p, _) in enumerate(versions)}
    ran = []

    def fake_run_side(scn, side, repeat=1, pcap_dir=None, progress=None):
        ran.append(side.kernel)
        ok = index[side.kernel] >= flip
        return matrix.Cell(side, [Verdict("x", checks=[Check("delivered", ok, str(ok), "True")])])

    monkeypatch.setattr(matrix, "run_side", fake_run_side)
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    assert b.ok and versions[b.first_different][0] == versions[flip][0], b.reason
    assert b.tried[b.first_different].verdict == "PASS" and b.tried[b.first_different - 1].verdict == "FAIL"
    n = len(versions)
    assert len(ran) == len(set(ran)) == b.boots <= 2 + math.ceil(math.log2(n - 1))
    assert versions[flip][0] in b.reason and b.to_json()["first_different"]["package"] == versions[flip][0]


@needs_apt
def test_bisect_says_when_the_ends_agree_or_a_verdict_is_mixed(monkeypatch):
    from faultinj.scenario import load, matrix
    from faultinj.verdict import Check, Verdict

    def cell(side, oks):
        return matrix.Cell(side, [Verdict("x", checks=[Check("c", ok, "", "")]) for ok in oks])

    monkeypatch.setattr(matrix, "run_side", lambda scn, side, *a, **k: cell(side, [True]))
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64")
    assert not b.ok and "both ends give PASS" in b.reason and b.boots == 2
    monkeypatch.setattr(matrix, "run_side", lambda scn, side, *a, **k: cell(
        side, [True, False] if "-52-" in side.kernel else [side.kernel.endswith("57-amd64")] * 2))
    b = matrix.bisect(load(DROP), "linux-image-6.1.0-47-amd64", "linux-image-6.1.0-57-amd64", repeat=2)
    assert not b.ok and "MIXED (1 of 2 runs pass)" in b.reason and "cannot be placed" in b.reason
